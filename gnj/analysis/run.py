"""``--mode=analyze``: GNE moments per block and for the whole network (matrix-free), LDI and
NN-Mass where defined, of the latest checkpoint in the workdir (or of the init if none).

Writes ``<workdir>/analysis/analysis.json`` and ``phi_by_block.png``. Config keys (all optional,
``config.analysis``): ``num_samples`` (8), ``num_probes`` (16), ``seed`` (0).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gnj import checkpoint, train
from gnj.analysis import blocks, gne, ldi
from gnj.models import dense_mlp
from gnj.models.nn_mass import nn_mass


def analyze(model: Any, variables: Any, images: jax.Array, num_probes: int = 16,
            seed: int = 0) -> dict[str, Any]:
    """Every quantity for one model at one set of inputs."""
    key = jax.random.PRNGKey(seed)
    result: dict[str, Any] = {"blocks": {}}
    inputs = blocks.block_inputs(model, variables, images)
    for i, (name, z) in enumerate(inputs.items()):
        f = blocks.block_function(model, variables, images[:1], name)
        per_sample = lambda zi, f=f: f(zi[None])[0]
        result["blocks"][name] = gne.hutchinson_moments(per_sample, z, num_probes,
                                                        jax.random.fold_in(key, i))
    net = lambda xi: model.apply(variables, xi[None], train=False)[0]
    result["network"] = gne.hutchinson_moments(net, images, num_probes, key)
    if isinstance(model, dense_mlp.DenseMLP):
        result["ldi"] = ldi.ldi(ldi.dense_mlp_jacobians(model, variables, images))
    try:
        result["nn_mass"] = nn_mass(model).mass
    except ValueError:
        pass
    return result


def run(config: Any, workdir: str) -> dict[str, Any]:
    """Analyse the newest checkpoint of ``workdir`` (or the init) and write the results."""
    exp = train.build_experiment(config)
    state, source = exp.state, "init"
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
        try:
            state = checkpoint.restore_variables_into(state, workdir)
            source = "checkpoint"
        except FileNotFoundError:
            pass
    cfg = config.get("analysis", {}) or {}
    n = int(cfg.get("num_samples", 8))
    batch = next(iter(exp.source.eval_batches()))
    images = exp.source.preprocess(jnp.asarray(batch["image"][:n]), None)
    result = analyze(exp.model, state.variables(), images, int(cfg.get("num_probes", 16)),
                     int(cfg.get("seed", 0)))
    result["source"] = source
    out = os.path.join(workdir, "analysis")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "analysis.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot_phi(result, os.path.join(out, "phi_by_block.png"))
    print(f"analysis of the {source} written to {out}", flush=True)
    return result


def plot_phi(result: dict[str, Any], path: str) -> None:
    """φ(JJᵀ) ± 1 s.e. and the spread of every block against depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["blocks"])
    phi = np.array([result["blocks"][b]["phi"] for b in names])
    se = np.array([result["blocks"][b]["phi_se"] for b in names])
    spread = np.array([result["blocks"][b]["spread"] for b in names])
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].errorbar(range(len(names)), phi, yerr=se, marker="o")
    ax[0].axhline(1.0, color="gray", ls="--")
    ax[0].set(xlabel="block", ylabel="φ(JJᵀ)", title="block-wise φ(JJᵀ) (GNE: ≈ 1)")
    ax[1].plot(range(len(names)), spread, marker="o")
    ax[1].set(xlabel="block", ylabel="φ((JJᵀ)²) − φ(JJᵀ)²", title="spread")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
