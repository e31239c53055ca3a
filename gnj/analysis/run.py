"""``--mode=analyze``: Jacobian analysis of the latest checkpoint in a workdir (or of the init).

    python -m gnj.main --config=configs/default.py --workdir=runs/default --mode=analyze

For ``num_samples`` real inputs (eval mode) it computes

- GNE moments φ(JJᵀ), φ((JJᵀ)²), spread (± s.e.) of every block at its real input and of the
  whole network (input → logits), exact where the Jacobians fit in ``exact_max_bytes``,
  Hutchinson otherwise (``gnj.analysis.gne``);
- the singular-value spectrum of the network Jacobian: exact (SVD of the same Jacobians) where
  they fit, else stochastic Lanczos quadrature (``gnj.analysis.spectrum``): mean singular value
  (± s.e.) and φ, with nodes/weights; per block too when ``block_spectra`` is set;
- LDI (``gnj.analysis.ldi``) for a ``dense_mlp`` and NN-Mass where the model defines it,

and writes ``<workdir>/analysis/analysis.json``, ``phi_by_block.png`` and ``spectrum.png``
(plus ``grad_norms.png`` when the workdir's ``metrics.jsonl`` holds training-time gradient norms,
see ``gnj.analysis.plots``).

Config keys (``config.analysis``, all optional): ``num_samples`` (8), ``num_probes`` (16),
``seed`` (0), ``exact_max_bytes`` (64 MiB), ``lanczos_steps`` (32), ``spectrum_probes`` (8),
``block_spectra`` (False), ``elu_derivative`` ("correct").
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gnj.analysis import gne, jacobian, ldi, plots, spectrum

DEFAULTS = dict(num_samples=8, num_probes=16, seed=0, exact_max_bytes=gne.DEFAULT_EXACT_MAX_BYTES,
                lanczos_steps=32, spectrum_probes=8, block_spectra=False,
                elu_derivative="correct")


def settings(config: Any) -> dict[str, Any]:
    """``config.analysis`` merged over :data:`DEFAULTS` (works without the section)."""
    section = config.get("analysis", {}) if hasattr(config, "get") else {}
    section = section or {}
    return {k: type(v)(section.get(k, v)) for k, v in DEFAULTS.items()}


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


def analyze(model: Any, variables: Any, images: jax.Array, num_probes: int = 16, seed: int = 0,
            exact_max_bytes: int = gne.DEFAULT_EXACT_MAX_BYTES, lanczos_steps: int = 32,
            spectrum_probes: int = 8, block_spectra: bool = False,
            elu_derivative: str = "correct") -> dict[str, Any]:
    """Every quantity for one model at one set of inputs (a dict of floats and arrays)."""
    k_blocks, k_net, k_spec = np.random.default_rng(seed).spawn(3)
    result: dict[str, Any] = {
        "num_samples": int(images.shape[0]),
        "blocks": gne.block_moments(model, variables, images, num_probes, k_blocks,
                                    exact_max_bytes),
    }
    net = gne.ModelMap(model)
    if gne.fits(net, variables, images, exact_max_bytes):  # one Jacobian for both
        jac = gne.exact_jacobians(net, variables, images)
        result["network"] = gne.exact_moments(jac)
        sv = jax.device_get(jacobian.singular_values(jac))
        result["spectrum"] = {"network": spectrum.exact_spectrum(sv, jac.shape[1])}
    else:
        result["network"] = gne.hutchinson_moments_fn(net, variables, images, num_probes, k_net)
        result["spectrum"] = {"network": spectrum.slq_fn(net, variables, images, spectrum_probes,
                                                         lanczos_steps, k_spec)}
    if block_spectra:
        for name in result["blocks"]:
            result["spectrum"][name] = spectrum.block_spectrum(
                model, variables, images, name, spectrum_probes, lanczos_steps, k_spec,
                exact_max_bytes)
    from gnj.models.nn_mass import nn_mass
    from gnj.proj.nn_mass import dense_mlp

    if isinstance(model, dense_mlp.DenseMLP):
        flat = jnp.reshape(images, (images.shape[0], -1))
        result["ldi"] = ldi.ldi(ldi.dense_mlp_jacobians(model, variables, flat, elu_derivative))
        result["ldi"]["elu_derivative"] = elu_derivative
    try:
        result["nn_mass"] = float(nn_mass(model).mass)
    except ValueError:
        pass
    else:  # the NN-Mass reference reports parameters and FLOPs next to NN-Mass
        from gnj.models.flops import count_flops, count_params

        result["params"] = count_params(variables)
        result["flops"] = count_flops(model, tuple(images.shape[1:]), variables)
    return result


def _restore(config: Any, workdir: str, state: Any) -> tuple[Any, str]:
    """Variables of the newest checkpoint in ``workdir`` (or the init), and where they came from."""
    from gnj import checkpoint

    restore_latest_variables = getattr(checkpoint, "restore_latest_variables", None)
    if restore_latest_variables is not None:
        variables = restore_latest_variables(config, workdir)
        if variables is not None:
            return variables, "checkpoint"
        return state.variables(), "init"
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
        try:
            return checkpoint.restore_variables_into(state, workdir).variables(), "checkpoint"
        except FileNotFoundError:
            pass
    return state.variables(), "init"


def run(config: Any, workdir: str, images: jax.Array | None = None,
        variables: Any | None = None, model: Any | None = None) -> dict[str, Any]:
    """Analyse the newest checkpoint of ``workdir`` (or ``variables``, or the init); write files.

    ``images``: model inputs (preprocessed, NHWC float32); default: the first ``num_samples``
    of the config's eval split. ``model``: default built from the config. Anything not given
    comes from ``gnj.train.build_experiment(config)``. Returns the result dict (with ``source``:
    "checkpoint", "init" or "given").
    """
    cfg = settings(config)
    exp = None
    if images is None or variables is None or model is None:
        from gnj import train

        exp = train.build_experiment(config)
    model = exp.model if model is None else model
    if variables is None:
        variables, source = _restore(config, workdir, exp.state)
    else:
        source = "given"
    if images is None:
        batch = next(iter(exp.source.eval_batches()))
        images = exp.source.preprocess(jnp.asarray(batch["image"][: cfg["num_samples"]]), None)
    else:
        images = jnp.asarray(images)[: cfg["num_samples"]]
    result = analyze(model, variables, images, cfg["num_probes"], cfg["seed"],
                     cfg["exact_max_bytes"], cfg["lanczos_steps"], cfg["spectrum_probes"],
                     cfg["block_spectra"], cfg["elu_derivative"])
    result["source"] = source
    out = os.path.join(os.path.abspath(workdir), "analysis")
    os.makedirs(out, exist_ok=True)
    if result["blocks"]:
        plots.plot_block_moments(result["blocks"], os.path.join(out, "phi_by_block.png"))
    net = result["spectrum"]["network"]
    plots.plot_spectrum(net["nodes"], net["weights"], os.path.join(out, "spectrum.png"),
                        title="input → logits Jacobian", label=net["method"])
    metrics = os.path.join(os.path.abspath(workdir), "metrics.jsonl")
    if os.path.exists(metrics) and any(plots.metric_series(plots.read_metrics(metrics), regex)
                                       for regex, _ in plots.GRAD_NORM_PANELS.values()):
        plots.plot_grad_norms(metrics, os.path.join(out, "grad_norms.png"))
    with open(os.path.join(out, "analysis.json"), "w") as f:
        json.dump(_jsonable(result), f, indent=1)
    print(f"analysis of the {source} written to {out} "
          f"(network φ(JJᵀ) = {result['network']['phi']:.4g})", flush=True)
    return result
