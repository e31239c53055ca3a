"""PNG plots of the analysis (matplotlib, Agg backend; nothing is shown on screen).

    python -m gnj.analysis.plots runs/default            # one workdir: grad_norms.png
    python -m gnj.analysis.plots runs/mlp_tc --analyze   # a sweep: + ldi_vs_mass.png

- :func:`plot_spectrum`: singular-value density from SLQ nodes/weights (and exact values).
- :func:`plot_block_moments`: φ(JJᵀ) ± 1 s.e. and the spread of every block against depth.
- :func:`plot_grad_norms`: per-layer gradient norms over training from a ``metrics.jsonl``:
  Chen et al.'s ‖∂L/∂W‖²_F per weight (``grad_l2/<param>``, REFERENCE.md §1.11) and Lubana et
  al.'s ‖∂L/∂y‖_F per conv output (``probe/<conv>/grad_norm``, §2.5), both written by the
  training-time probes (``config.analysis.probe_every_steps``).
- :func:`plot_compare`: φ(JJᵀ) by block and the network spectrum of several analysed runs.
- :func:`plot_ldi_vs_mass`: LDI (mean ± std singular value, §4.3) against NN-Mass (§4.2) over
  the runs of a sweep, from each run's ``analysis/analysis.json`` (``--mode=analyze``).

The command line (:func:`main`) takes a workdir or a sweep root (``launch.sweep``'s
``<root>/<variant>/<repeat>`` layout, or any tree of workdirs): every workdir whose
``metrics.jsonl`` has gradient norms gets ``<workdir>/analysis/grad_norms.png``; the runs with
LDI and NN-Mass in their ``analysis.json`` give ``<root>/analysis/ldi_vs_mass.png`` (and
``ldi_vs_mass.json``, the plotted points); two or more runs with block moments give
``<root>/analysis/compare.png`` (:func:`plot_compare`: φ by block and the network spectrum of
every run, e.g. Kaiming vs orthogonal vs delta-orthogonal init). ``--analyze`` first runs the
``--mode=analyze`` analysis (``gnj.analysis.run``) on every workdir that has a ``config.json``
but no ``analysis/analysis.json``, with the config rebuilt from that ``config.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from gnj import metrics
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
    """The records of a ``metrics.jsonl`` (one JSON object per line; a torn line is skipped)."""
    records = []
    with open(path) as f:
        for line in f:
            if line.strip():
                try:
                    records.append(metrics.loads_record(line))  # "NaN" strings too
                except json.JSONDecodeError:
                    continue
    return records


#: Panels of :func:`plot_grad_norms`: (metric-name regex, y label).
GRAD_NORM_PANELS: dict[str, tuple[str, str]] = {
    "weights": (r"^grad_l2/", "‖∂L/∂W‖²_F per weight (grad_l2)"),
    "conv outputs": (r"^probe/.+/grad_norm$", "‖∂L/∂y‖_F per conv output"),
}


def natural_key(name: str) -> list[Any]:
    """Sort key reading digit runs as numbers (``block2`` before ``block10``)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


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


def plot_grad_norms(metrics_path: str, path: str,
                    panels: dict[str, tuple[str, str]] | None = None) -> str:
    """Per-layer gradient norms against the step, log y: one panel per entry of ``panels``
    (default :data:`GRAD_NORM_PANELS`) that has a matching metric; colour runs with depth."""
    plt = _pyplot()
    panels = GRAD_NORM_PANELS if panels is None else panels
    records = read_metrics(metrics_path)
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
    return _save(fig, path)


def plot_ldi_vs_mass(sweep: Sequence[dict[str, Any]], path: str, x: str = "nn_mass",
                     y: str = "ldi_mean", yerr: str = "ldi_std") -> str:
    """LDI against NN-Mass over a sweep (``[{"nn_mass", "ldi_mean", "ldi_std", ...}]``): one
    point per run, error bar = the std of its singular values."""
    plt = _pyplot()
    pts = sorted(sweep, key=lambda r: r[x])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar([r[x] for r in pts], [r[y] for r in pts],
                yerr=[r.get(yerr, 0.0) for r in pts], marker="o", ls="none", capsize=3)
    ax.axhline(1.0, color="gray", ls="--", lw=0.8)
    ax.set(xlabel="NN-Mass", ylabel="LDI (mean singular value)",
           title=f"LDI vs NN-Mass ({len(pts)} runs)")
    return _save(fig, path)


def plot_compare(analyses: dict[str, dict[str, Any]], path: str, floor: float = 1e-6,
                 bandwidth: float = 0.08) -> str:
    """Several ``analysis.json`` results side by side: φ(JJᵀ) of every block against depth
    (log y, ± 1 s.e.) and the density of log₁₀ σ of the network Jacobian's singular values
    (from exact values or SLQ nodes/weights; Gaussian kernel of ``bandwidth`` decades), one
    line per run. Singular values below ``floor`` × the run's largest are left out of the
    density (their share of the weight is given in the legend)."""
    plt = _pyplot()
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
               title="block-wise φ(JJᵀ) (GNE: ≈ 1)")
    ax_sv.axvline(0.0, color="gray", ls="--", lw=0.8)
    ax_sv.set(xlabel="log₁₀ σ (singular value of input → logits Jacobian)", ylabel="density",
              title="network Jacobian spectrum")
    ax_phi.legend(fontsize=7)
    ax_sv.legend(fontsize=7)
    return _save(fig, path)


# ------------------------------------------------------------------------- command line

_SKIP_DIRS = ("checkpoints", "tensorboard", "report", "analysis")


def workdirs(root: str) -> list[str]:
    """Every workdir under ``root`` (itself included): a directory with ``config.json``,
    ``metrics.jsonl`` or ``analysis/analysis.json``, in natural order."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"gnj.analysis.plots: no directory {root!r}")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted((d for d in dirnames if d not in _SKIP_DIRS), key=natural_key)
        if ("config.json" in filenames or "metrics.jsonl" in filenames
                or os.path.exists(os.path.join(dirpath, "analysis", "analysis.json"))):
            found.append(dirpath)
    return sorted(found, key=natural_key)


def analyses(root: str) -> dict[str, dict[str, Any]]:
    """``{run (path relative to root): analysis.json}`` of every run under ``root`` that has
    one."""
    out = {}
    for wd in workdirs(root):
        path = os.path.join(wd, "analysis", "analysis.json")
        if os.path.exists(path):
            with open(path) as f:
                out[os.path.relpath(wd, root)] = json.load(f)
    return out


def ldi_points(root: str) -> list[dict[str, Any]]:
    """``[{"run", "nn_mass", "ldi_mean", "ldi_std"}]`` of every run under ``root`` whose
    ``analysis/analysis.json`` has both LDI and NN-Mass (``run``: path relative to ``root``)."""
    pts = []
    for run, result in analyses(root).items():
        if "ldi" not in result or "nn_mass" not in result:
            continue
        pts.append({"run": run, "nn_mass": float(result["nn_mass"]),
                    "ldi_mean": float(result["ldi"]["ldi_mean"]),
                    "ldi_std": float(result["ldi"]["ldi_std"])})
    return pts


def load_config(workdir: str) -> Any:
    """The run's config from its ``config.json`` (JSON lists back to tuples, as configs hold)."""
    import ml_collections

    def tuples(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: tuples(x) for k, x in v.items()}
        if isinstance(v, list):
            return tuple(tuples(x) for x in v)
        return v

    with open(os.path.join(workdir, "config.json")) as f:
        return ml_collections.ConfigDict(tuples(json.load(f)))


def make_plots(root: str, analyze: bool = False) -> list[str]:
    """Every plot :func:`main` writes for ``root`` (see the module docstring); their paths."""
    written = []
    for wd in workdirs(root):
        has_config = os.path.exists(os.path.join(wd, "config.json"))
        if analyze and has_config and not os.path.exists(
                os.path.join(wd, "analysis", "analysis.json")):
            from gnj.analysis import run

            run.run(load_config(wd), wd)
        metrics = os.path.join(wd, "metrics.jsonl")
        if os.path.exists(metrics):
            records = read_metrics(metrics)
            if any(metric_series(records, r) for r, _ in GRAD_NORM_PANELS.values()):
                os.makedirs(os.path.join(wd, "analysis"), exist_ok=True)
                written.append(plot_grad_norms(metrics,
                                               os.path.join(wd, "analysis", "grad_norms.png")))
    pts = ldi_points(root)
    if pts:
        out = os.path.join(root, "analysis")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "ldi_vs_mass.json"), "w") as f:
            json.dump(pts, f, indent=1)
        written.append(plot_ldi_vs_mass(pts, os.path.join(out, "ldi_vs_mass.png")))
    compared = {k: v for k, v in analyses(root).items() if v.get("blocks")}
    if len(compared) >= 2:
        out = os.path.join(root, "analysis")
        os.makedirs(out, exist_ok=True)
        written.append(plot_compare(compared, os.path.join(out, "compare.png")))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gnj.analysis.plots",
                                description="gradient-norm and LDI-vs-NN-Mass plots of a "
                                "workdir or a sweep")
    p.add_argument("root", help="a workdir or a sweep's root directory")
    p.add_argument("--analyze", action="store_true",
                   help="first run --mode=analyze on every workdir without analysis.json")
    args = p.parse_args(argv)
    written = make_plots(args.root, args.analyze)
    if not written:
        print(f"gnj.analysis.plots: nothing to plot under {args.root!r}: no metrics.jsonl with "
              "grad_l2/* or probe/*/grad_norm (train with --config.analysis.probe_every_steps=N)"
              " and no analysis/analysis.json with ldi and nn_mass (run --mode=analyze, or "
              "pass --analyze)", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
