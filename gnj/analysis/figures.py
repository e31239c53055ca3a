"""PNG figures of analysis results (matplotlib, Agg backend; nothing is shown on screen).

- :func:`plot_spectrum`: singular-value density from SLQ nodes/weights (and exact values).
- :func:`plot_block_moments`: φ(JJᵀ) ± 1 s.e. and the spread of every block against depth.
- :func:`plot_grad_norms`: per-layer gradient norms over training from a ``metrics.jsonl``:
  ‖∂L/∂W‖²_F per weight (``grad_l2/<param>``) and ‖∂L/∂y‖_F per conv output
  (``probe/<conv>/grad_norm``), both written by the train-time ``probes`` hook
  (``config.analysis.probe_every_steps``, ``gnj.analysis.probes``).
- :func:`plot_compare`: φ(JJᵀ) by block and the network spectrum of several analysed runs.

:func:`pyplot` and :func:`save_figure` are the two helpers every figure (papers' too) uses.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from gnj import metrics
from gnj.analysis import spectrum


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str) -> str:
    """Write ``fig`` to ``path`` (PNG, 100 dpi), close it; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


def plot_spectrum(nodes: np.ndarray, weights: np.ndarray, path: str, title: str = "",
                  exact: np.ndarray | None = None, num_points: int = 200,
                  label: str = "SLQ") -> str:
    """Smoothed singular-value density of ``nodes``/``weights`` (plus an exact histogram)."""
    plt = pyplot()
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
    return save_figure(fig, path)


def plot_block_moments(block_moments: dict[str, dict[str, Any]], path: str) -> str:
    """φ(JJᵀ) ± 1 s.e. (≈ 1 for a norm-preserving block) and the spread φ((JJᵀ)²) − φ(JJᵀ)²
    of each block against depth."""
    plt = pyplot()
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
    return save_figure(fig, path)


#: Panels of :func:`plot_grad_norms`: (metric-name regex, y label).
GRAD_NORM_PANELS: dict[str, tuple[str, str]] = {
    "weights": (r"^grad_l2/", "‖∂L/∂W‖²_F per weight (grad_l2)"),
    "conv outputs": (r"^probe/.+/grad_norm$", "‖∂L/∂y‖_F per conv output"),
}


def metric_series(records: Sequence[dict[str, Any]], pattern: str
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{metric: (steps, values)}`` for every metric matching ``pattern``, in the order the
    metrics first appear in the records (the probes write them in depth order)."""
    keys = list(dict.fromkeys(k for r in records for k in r if re.search(pattern, k)))
    out = {}
    for k in keys:
        pts = [(r["step"], r[k]) for r in records if k in r and "step" in r]
        steps, vals = zip(*pts)
        out[k] = (np.asarray(steps), np.asarray(vals, np.float64))
    return out


def has_grad_norms(records: Sequence[dict[str, Any]]) -> bool:
    """Whether any metric of ``records`` is one :func:`plot_grad_norms` draws."""
    return any(metric_series(records, regex) for regex, _ in GRAD_NORM_PANELS.values())


def plot_grad_norms(metrics_path: str, path: str,
                    panels: dict[str, tuple[str, str]] | None = None) -> str:
    """Per-layer gradient norms against the step, log y: one panel per entry of ``panels``
    (default :data:`GRAD_NORM_PANELS`) that has a matching metric; colour runs with depth."""
    plt = pyplot()
    panels = GRAD_NORM_PANELS if panels is None else panels
    records = metrics.read_jsonl(metrics_path)
    found = {title: (metric_series(records, regex), label)
             for title, (regex, label) in panels.items()}
    found = {t: v for t, v in found.items() if v[0]}
    if not found:
        raise ValueError(f"plot_grad_norms: no metric in {metrics_path!r} matches "
                         f"{[r for r, _ in panels.values()]} (train with "
                         "--config.analysis.probe_every_steps=N to log them)")
    fig, axes = plt.subplots(1, len(found), figsize=(6.5 * len(found), 4), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, (title, (series, label)) in zip(axes[0], found.items()):
        for i, (k, (steps, vals)) in enumerate(series.items()):
            ax.plot(steps, vals, color=cmap(i / max(len(series) - 1, 1)), lw=1,
                    label=k if len(series) <= 10 else None)
        ax.set(xlabel="step", ylabel=label, yscale="log",
               title=f"{title}: {len(series)} layers (dark = first)")
        if len(series) <= 10:
            ax.legend(fontsize=6)
    return save_figure(fig, path)


def plot_compare(analyses: dict[str, dict[str, Any]], path: str, floor: float = 1e-6,
                 bandwidth: float = 0.08) -> str:
    """Several ``analysis.json`` results side by side: φ(JJᵀ) of every block against depth
    (log y, ± 1 s.e.) and the density of log₁₀ σ of the network Jacobian's singular values
    (from exact values or SLQ nodes/weights; Gaussian kernel of ``bandwidth`` decades), one
    line per run. Singular values below ``floor`` × the run's largest are left out of the
    density (their share of the weight is given in the legend)."""
    plt = pyplot()
    fig, (ax_phi, ax_sv) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, result in analyses.items():
        blocks = result.get("blocks", {})
        phi = np.array([b["phi"] for b in blocks.values()], np.float64)
        se = np.nan_to_num(np.array([b.get("phi_se", 0.0) for b in blocks.values()], float))
        net_phi = result.get("network", {}).get("phi", np.nan)
        label = f"{name} (network φ = {net_phi:.3g})"
        ax_phi.errorbar(np.arange(len(phi)), phi, yerr=se, marker="o", ms=3, label=label)
        spec = result.get("spectrum", {}).get("network")
        if spec is not None:
            nodes = np.asarray(spec["nodes"], np.float64)
            weights = np.asarray(spec["weights"], np.float64)
            keep = nodes > floor * nodes.max()  # numerically zero σ would stretch the axis
            dropped = float(weights[~keep].sum() / weights.sum())
            logs = np.log10(nodes[keep])
            grid = np.linspace(logs.min() - 0.5, logs.max() + 0.5, 400)
            note = f" ({dropped:.0%} of σ < {floor:g}·max not shown)" if dropped > 0 else ""
            ax_sv.plot(grid, spectrum.density(logs, weights[keep], grid, bandwidth),
                       label=name + note)
    ax_phi.axhline(1.0, color="gray", ls="--", lw=0.8)
    ax_phi.set(xlabel="block (depth order)", ylabel="φ(JJᵀ)", yscale="log",
               title="block-wise φ(JJᵀ) (≈ 1: norm-preserving)")
    ax_sv.axvline(0.0, color="gray", ls="--", lw=0.8)
    ax_sv.set(xlabel="log₁₀ σ (singular value of input → logits Jacobian)", ylabel="density",
              title="network Jacobian spectrum")
    ax_phi.legend(fontsize=7)
    ax_sv.legend(fontsize=7)
    return save_figure(fig, path)
