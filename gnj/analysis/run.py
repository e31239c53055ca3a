"""``--mode=analyze``: the analyze hooks on the latest checkpoint of a workdir (or on the init).

    python -m gnj.main --config=configs/default.py --workdir=runs/default --mode=analyze

Takes the first ``analysis.num_samples`` inputs of the config's eval split (eval mode), runs
every analyze hook of ``config.analysis.hooks`` (empty: all of them; ``gnj.analysis.hooks``,
docs/analysis.md#hooks) and writes their merged results, with ``num_samples`` and ``source``
("checkpoint", "init" or "given"), to ``<workdir>/analysis/analysis.json``. Figures of the
results present: ``phi_by_block.png`` (``blocks``), ``spectrum.png`` (``spectrum``) and
``grad_norms.png`` when the workdir's ``metrics.jsonl`` holds train-time gradient norms
(``gnj.analysis.figures``). Settings: ``config.analysis``, defaults in
``gnj.config_schema.FIELDS``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gnj import checkpoint, metrics, train
from gnj.analysis import figures, hooks


def _jsonable(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _jsonable(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_jsonable(v) for v in tree]
    if isinstance(tree, (np.ndarray, jax.Array)):
        return np.asarray(tree).tolist()
    if isinstance(tree, (np.floating, np.integer)):
        return tree.item()
    return tree


def analyze(model: Any, variables: Any, images: jax.Array, config: Any) -> dict[str, Any]:
    """Every selected analyze hook for one model at one set of inputs (floats and arrays)."""
    return {"num_samples": int(images.shape[0]),
            **hooks.run_hooks(model, variables, images, config)}


def _restore(workdir: str, state: Any) -> tuple[Any, str]:
    """Variables of the newest checkpoint in ``workdir`` (or the init), and where they came from."""
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
        try:
            return checkpoint.restore_variables_into(state, workdir).variables(), "checkpoint"
        except FileNotFoundError:
            pass
    return state.variables(), "init"


def write_figures(result: dict[str, Any], workdir: str, out: str) -> None:
    """The figures of ``result`` (see the module docstring) into ``out``."""
    if result.get("blocks"):
        figures.plot_block_moments(result["blocks"], os.path.join(out, "phi_by_block.png"))
    net = result.get("spectrum", {}).get("network")
    if net is not None:
        figures.plot_spectrum(net["nodes"], net["weights"], os.path.join(out, "spectrum.png"),
                              title="input → logits Jacobian", label=net["method"])
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(metrics_path) and figures.has_grad_norms(
                metrics.read_jsonl(metrics_path)):
        figures.plot_grad_norms(metrics_path, os.path.join(out, "grad_norms.png"))


def run(config: Any, workdir: str, images: jax.Array | None = None,
        variables: Any | None = None, model: Any | None = None) -> dict[str, Any]:
    """Analyse the newest checkpoint of ``workdir`` (or ``variables``, or the init); write files.

    ``images``: model inputs (preprocessed, NHWC float32); default: the first ``num_samples``
    of the config's eval split. ``model``: default built from the config. Anything not given
    comes from ``gnj.train.build_experiment(config)``. Returns the result dict.
    """
    num_samples = int(hooks.setting(config, "num_samples"))
    exp = None
    if images is None or variables is None or model is None:
        exp = train.build_experiment(config)
    model = exp.model if model is None else model
    if variables is None:
        variables, source = _restore(workdir, exp.state)
    else:
        source = "given"
    if images is None:
        batch = next(iter(exp.source.eval_batches()))
        images = exp.source.preprocess(jnp.asarray(batch["image"][:num_samples]), None)
    else:
        images = jnp.asarray(images)[:num_samples]
    result = analyze(model, variables, images, config)
    result["source"] = source
    workdir = os.path.abspath(workdir)
    out = os.path.join(workdir, "analysis")
    os.makedirs(out, exist_ok=True)
    write_figures(result, workdir, out)
    with open(os.path.join(out, "analysis.json"), "w") as f:
        json.dump(_jsonable(result), f, indent=1)
    phi = result.get("network", {}).get("phi")
    summary = f" (network φ(JJᵀ) = {phi:.4g})" if phi is not None else ""
    print(f"analysis of the {source} written to {out}{summary}", flush=True)
    return result
