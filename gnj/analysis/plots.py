"""PNG plots of the analysis (matplotlib, Agg backend; nothing is shown on screen).

- :func:`plot_spectrum`: singular-value density from SLQ nodes/weights (and exact values).
- :func:`plot_block_moments`: φ(JJᵀ) ± 1 s.e. and the spread of every block against depth.
- :func:`plot_grad_norms`: per-layer gradient norms over training from a ``metrics.jsonl``.
- :func:`plot_ldi_vs_mass`: LDI (mean ± std singular value) against NN-Mass over a sweep.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from gnj.analysis import spectrum


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def plot_spectrum(nodes: np.ndarray, weights: np.ndarray, path: str, title: str = "",
                  exact: np.ndarray | None = None, num_points: int = 200,
                  label: str = "SLQ") -> str:
    """Smoothed singular-value density of ``nodes``/``weights`` (plus an exact histogram)."""
    plt = _pyplot()
    nodes = np.asarray(nodes, np.float64)
    hi = float(nodes.max()) if exact is None else max(float(nodes.max()), float(np.max(exact)))
    grid = np.linspace(0.0, 1.05 * hi + 1e-6, num_points)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if exact is not None:
        ax.hist(np.ravel(exact), bins=40, density=True, alpha=0.4, label="exact")
    ax.plot(grid, spectrum.density(nodes, weights, grid), label=label)
    ax.axvline(1.0, color="gray", ls="--", lw=0.8)
    ax.set(xlabel="singular value σ", ylabel="density", title=title or "Jacobian spectrum")
    ax.legend()
    return _save(fig, path)


def plot_block_moments(block_moments: dict[str, dict[str, Any]], path: str) -> str:
    """φ(JJᵀ) ± 1 s.e. (GNE: ≈ 1) and the spread φ((JJᵀ)²) − φ(JJᵀ)² of each block vs depth."""
    plt = _pyplot()
    names = list(block_moments)
    get = lambda key: np.array([block_moments[b].get(key, np.nan) for b in names], float)
    x = np.arange(len(names))
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].errorbar(x, get("phi"), yerr=np.nan_to_num(get("phi_se")), marker="o")
    ax[0].axhline(1.0, color="gray", ls="--")
    ax[0].set(xlabel="block (depth order)", ylabel="φ(JJᵀ)", title="block-wise φ(JJᵀ)")
    ax[1].errorbar(x, get("spread"), yerr=np.nan_to_num(get("spread_se")), marker="o")
    ax[1].axhline(0.0, color="gray", ls="--")
    ax[1].set(xlabel="block (depth order)", ylabel="φ((JJᵀ)²) − φ(JJᵀ)²", title="spread")
    if len(names) <= 12:
        for a in ax:
            a.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
    return _save(fig, path)


def read_metrics(path: str) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (one JSON object per line)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_grad_norms(metrics_path: str, path: str, pattern: str = r"/(grad_norm|grad_l2)$"
                    ) -> str:
    """Every metric matching ``pattern`` (per-layer gradient norms) against the step, log y."""
    plt = _pyplot()
    records = read_metrics(metrics_path)
    keys = sorted({k for r in records for k in r if re.search(pattern, k)})
    if not keys:
        raise ValueError(f"plot_grad_norms: no metric in {metrics_path!r} matches {pattern!r}")
    fig, ax = plt.subplots(figsize=(7, 4))
    cmap = plt.get_cmap("viridis")
    for i, k in enumerate(keys):
        pts = [(r["step"], r[k]) for r in records if k in r and "step" in r]
        steps, vals = zip(*pts)
        ax.plot(steps, vals, color=cmap(i / max(len(keys) - 1, 1)), lw=1,
                label=k if len(keys) <= 10 else None)
    ax.set(xlabel="step", ylabel="gradient norm", yscale="log",
           title=f"per-layer gradient norms ({len(keys)} layers, dark = first)")
    if len(keys) <= 10:
        ax.legend(fontsize=6)
    return _save(fig, path)


def plot_ldi_vs_mass(sweep: Sequence[dict[str, Any]], path: str, x: str = "nn_mass",
                     y: str = "ldi_mean", yerr: str = "ldi_std") -> str:
    """LDI against NN-Mass over a sweep (``[{"nn_mass", "ldi_mean", "ldi_std", ...}]``)."""
    plt = _pyplot()
    pts = sorted(sweep, key=lambda r: r[x])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar([r[x] for r in pts], [r[y] for r in pts],
                yerr=[r.get(yerr, 0.0) for r in pts], marker="o", ls="none", capsize=3)
    ax.axhline(1.0, color="gray", ls="--", lw=0.8)
    ax.set(xlabel="NN-Mass", ylabel="LDI (mean singular value)", title="LDI vs NN-Mass")
    return _save(fig, path)
