"""Results of a sweep: median and range over repeats, as the references report them.

    python -m gnj.report runs/gne_init            # prints the table; writes runs/gne_init/report/

Collects every run under the directory (a workdir holds ``config.json`` and ``metrics.jsonl``).
Runs laid out by ``launch.sweep`` (``<root>/<variant>/<repeat>``) are grouped by variant; any
other workdir is its own group. Per group:

- **best** eval accuracy of each run (its best evaluation, the references' best-epoch figure)
  and **final** eval accuracy (its last evaluation): median and [min, max] over repeats;
- **median-curve best**: the maximum over evaluation steps of the per-step median across repeats
  (Online Normalization's "best epoch on the median curve", REFERENCE.md §5.7);
- final eval loss (median), completed steps, number of repeats;
- where the runs logged them, signal-propagation columns (median over repeats):
  **gradient-norm spread** from the per-layer probes' ``grad_l2/<param>`` = ‖∂L/∂W‖²
  (``config.analysis.probe_every_steps``): max/min over layers of ‖∂L/∂W‖ at the first and at
  the last probe (1 = gradient norm equality; every kernel with ≥ 2 axes counts, stem and
  classifier included); **weight correlations** from ``corr/<layer>/forward`` = −log|ρ| (ConstNet,
  ``gnj.analysis.correlations``): the smallest and the largest −log|ρ_forward| over layers at
  the last record (0 = that layer's filters are identical, so every channel of its output is the
  same; both 0 = the whole net is still symmetric) and ``corr/diversity``; **NN-Mass and LDI**
  from ``<workdir>/analysis/analysis.json`` (``--mode=analyze``, e.g. ``launch.sweep --mode
  analyze``): ``nn_mass``, ``params``, ``flops`` (as the NN-Mass reference counts them,
  ``gnj.models.flops``), ``ldi_mean``. A workdir with only ``analysis/analysis.json`` (analysis
  of an initialisation) is a run too.

Writes ``report/results.md`` and ``report/results.csv`` (one row per group) and PNG curves
``report/curves.png`` (median eval accuracy and train loss against step, one line per group, the
repeats' range shaded).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from gnj import metrics

ACC, LOSS, TRAIN_LOSS = "eval/accuracy", "eval/loss", "train/loss"


GRAD_L2, CORR, CORR_DIVERSITY = "grad_l2/", "corr/", "corr/diversity"


@dataclasses.dataclass
class RunResult:
    workdir: str
    records: list[dict[str, Any]]
    config: dict[str, Any]
    analysis: dict[str, Any] | None = None

    def _first_last(self, prefix: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        recs = [r for r in self.records if any(k.startswith(prefix) for k in r)]
        return (recs[0], recs[-1]) if recs else None

    def grad_spread(self) -> tuple[float, float]:
        """(first, last) max/min over layers of ‖∂L/∂W‖ from the probes' ``grad_l2/*``."""
        fl = self._first_last(GRAD_L2)
        if fl is None:
            return math.nan, math.nan
        return tuple(grad_norm_spread(r) for r in fl)

    def correlation(self) -> tuple[float, float, float]:
        """(min, max over layers of −log|ρ_forward|, diversity) at the last ``corr/`` record."""
        fl = self._first_last(CORR)
        if fl is None:
            return math.nan, math.nan, math.nan
        last = fl[1]
        fwd = [v for k, v in last.items()
               if k.startswith(CORR) and k.endswith("/forward") and _finite(v)]
        div = last.get(CORR_DIVERSITY, math.nan)
        return (min(fwd) if fwd else math.nan, max(fwd) if fwd else math.nan,
                float(div) if isinstance(div, (int, float)) else math.nan)

    def analysis_value(self, key: str) -> float:
        a = self.analysis or {}
        v = (a.get("ldi") or {}).get(key) if key.startswith("ldi") else a.get(key)
        return float(v) if isinstance(v, (int, float)) else math.nan

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        pts = [(r["step"], r[key]) for r in self.records if key in r and _finite(r[key])]
        if not pts:
            return np.zeros(0, int), np.zeros(0)
        s, v = zip(*pts)
        return np.asarray(s), np.asarray(v, float)

    @property
    def best(self) -> float:
        _, v = self.series(ACC)
        return float(v.max()) if v.size else math.nan

    @property
    def final(self) -> float:
        _, v = self.series(ACC)
        return float(v[-1]) if v.size else math.nan

    @property
    def final_loss(self) -> float:
        _, v = self.series(LOSS)
        return float(v[-1]) if v.size else math.nan

    @property
    def steps(self) -> int:
        return max((int(r["step"]) for r in self.records), default=0)


@dataclasses.dataclass
class Group:
    name: str
    runs: list[RunResult]

    def stats(self) -> dict[str, Any]:
        best = np.array([r.best for r in self.runs])
        final = np.array([r.final for r in self.runs])
        spreads = np.array([r.grad_spread() for r in self.runs], float).reshape(-1, 2)
        corr = np.array([r.correlation() for r in self.runs], float).reshape(-1, 3)
        extra = {
            "grad_spread_first": _nanmedian(spreads[:, 0]),
            "grad_spread_last": _nanmedian(spreads[:, 1]),
            "corr_forward_min": _nanmedian(corr[:, 0]),
            "corr_forward_max": _nanmedian(corr[:, 1]),
            "diversity": _nanmedian(corr[:, 2]),
            "nn_mass": _nanmedian(np.array([r.analysis_value("nn_mass") for r in self.runs])),
            "params": _nanmedian(np.array([r.analysis_value("params") for r in self.runs])),
            "flops": _nanmedian(np.array([r.analysis_value("flops") for r in self.runs])),
            "ldi_mean": _nanmedian(np.array([r.analysis_value("ldi_mean") for r in self.runs])),
        }
        return {
            "run": self.name, "n": len(self.runs),
            "best_median": _nanmedian(best), "best_min": _nanmin(best),
            "best_max": _nanmax(best),
            "final_median": _nanmedian(final), "final_min": _nanmin(final),
            "final_max": _nanmax(final),
            "median_curve_best": median_curve_best(self.runs),
            "final_loss_median": _nanmedian(np.array([r.final_loss for r in self.runs])),
            "steps": min(r.steps for r in self.runs),
            **extra,
        }


def grad_norm_spread(record: dict[str, Any]) -> float:
    """max/min over layers of ‖∂L/∂W‖ = √``grad_l2/<param>`` in one metrics record."""
    norms = [math.sqrt(v) for k, v in record.items()
             if k.startswith(GRAD_L2) and _finite(v) and v >= 0]
    if len(norms) < 2:
        return math.nan
    lo = min(norms)
    return math.inf if lo == 0 else max(norms) / lo


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _nanmedian(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else math.nan


def _nanmin(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(a.min()) if a.size else math.nan


def _nanmax(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else math.nan


def median_curve(runs: Sequence[RunResult], key: str = ACC) -> tuple[np.ndarray, np.ndarray,
                                                                       np.ndarray, np.ndarray]:
    """(steps, median, min, max) over repeats at the steps every repeat evaluated."""
    series = [r.series(key) for r in runs]
    series = [s for s in series if s[0].size]
    if not series:
        z = np.zeros(0)
        return z, z, z, z
    common = sorted(set.intersection(*(set(s.tolist()) for s, _ in series)))
    table = np.array([[dict(zip(s.tolist(), v))[t] for t in common] for s, v in series])
    return (np.asarray(common), np.median(table, 0), table.min(0), table.max(0))


def median_curve_best(runs: Sequence[RunResult]) -> float:
    _, med, _, _ = median_curve(runs)
    return float(med.max()) if med.size else math.nan


def read_run(workdir: str) -> RunResult | None:
    """A training run (``config.json`` + ``metrics.jsonl``) and/or an analysis
    (``analysis/analysis.json``) in ``workdir``; None if it has neither."""
    cfg_path, metrics_path = (os.path.join(workdir, "config.json"),
                              os.path.join(workdir, "metrics.jsonl"))
    analysis_path = os.path.join(workdir, "analysis", "analysis.json")
    analysis = None
    if os.path.exists(analysis_path):
        try:
            with open(analysis_path) as f:
                analysis = json.load(f)
        except json.JSONDecodeError:
            analysis = None
    trained = os.path.exists(cfg_path) and os.path.exists(metrics_path)
    if not trained and analysis is None:
        return None
    config, records = {}, []
    if trained:
        with open(cfg_path) as f:
            config = json.load(f)
        with open(metrics_path) as f:
            for line in f:
                try:
                    records.append(metrics.loads_record(line))
                except json.JSONDecodeError:
                    continue  # a line torn by a kill
    return RunResult(workdir, records, config, analysis)


def collect(root: str) -> list[Group]:
    """Every run under ``root``, grouped by variant (``<variant>/<repeat>`` layout)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"report: no directory {root!r}")
    groups: dict[str, list[RunResult]] = {}
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("checkpoints", "tensorboard",
                                                              "report", "analysis"))
        run = read_run(dirpath)
        if run is None:
            continue
        rel = os.path.relpath(dirpath, root)
        base = os.path.basename(os.path.normpath(dirpath))
        if base.isdigit():  # a repeat of a variant
            name = os.path.dirname(rel) or os.path.basename(os.path.abspath(root))
        else:
            name = rel if rel != "." else os.path.basename(os.path.abspath(root))
        groups.setdefault(name, []).append(run)
    if not groups:
        raise FileNotFoundError(f"report: no runs (config.json + metrics.jsonl, or "
                                f"analysis/analysis.json) under {root!r}")
    return [Group(k, v) for k, v in sorted(groups.items())]


def _pct(v: float) -> str:
    return "—" if not math.isfinite(v) else f"{100 * v:.2f}"


#: Optional columns: (row key, header, format); shown when any row has a finite value.
EXTRA_COLUMNS = (
    ("grad_spread_first", "grad-norm spread, first probe (max/min)", "{:.3g}"),
    ("grad_spread_last", "grad-norm spread, last probe", "{:.3g}"),
    ("corr_forward_min", "min −log|ρ_fwd| over layers", "{:.3g}"),
    ("corr_forward_max", "max −log|ρ_fwd|", "{:.3g}"),
    ("diversity", "diversity", "{:.3g}"),
    ("nn_mass", "NN-Mass", "{:.1f}"),
    ("params", "params", "{:,.0f}"),
    ("flops", "FLOPs", "{:,.0f}"),
    ("ldi_mean", "LDI (mean σ)", "{:.4f}"),
)


def _fmt(v: float, fmt: str) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "—"
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return fmt.format(v)


def _has(rows: Sequence[dict[str, Any]], key: str) -> bool:
    return any(isinstance(r.get(key), float) and not math.isnan(r[key]) for r in rows)


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    extra = [c for c in EXTRA_COLUMNS if _has(rows, c[0])]
    lines = ["| run | n | best acc % median [min–max] | final acc % median [min–max] | "
             "median-curve best % | final eval loss | steps |"
             + "".join(f" {h} |" for _, h, _ in extra),
             "|---|---|---|---|---|---|---|" + "---|" * len(extra)]
    for r in rows:
        loss = r["final_loss_median"]
        lines.append(
            f"| {r['run']} | {r['n']} | {_pct(r['best_median'])} "
            f"[{_pct(r['best_min'])}–{_pct(r['best_max'])}] | {_pct(r['final_median'])} "
            f"[{_pct(r['final_min'])}–{_pct(r['final_max'])}] | "
            f"{_pct(r['median_curve_best'])} | "
            f"{'—' if not math.isfinite(loss) else f'{loss:.4f}'} | {r['steps']} |"
            + "".join(f" {_fmt(r[k], f)} |" for k, _, f in extra))
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[dict[str, Any]], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(groups: Sequence[Group], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    for g in groups:
        for ax, key in ((ax_acc, ACC), (ax_loss, TRAIN_LOSS)):
            steps, med, lo, hi = median_curve(g.runs, key)
            if not steps.size:
                continue
            (line,) = ax.plot(steps, med, label=g.name)
            if len(g.runs) > 1:
                ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
    ax_acc.set(xlabel="step", ylabel="eval accuracy", title="eval accuracy (median, range)")
    ax_loss.set(xlabel="step", ylabel="train loss", title="train loss (median, range)",
                yscale="log")
    if len(groups) <= 20:
        ax_acc.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(root: str, out: str | None = None, plots: bool = True) -> list[dict[str, Any]]:
    """Collect, write ``results.md`` / ``results.csv`` / ``curves.png``; return the rows."""
    groups = collect(root)
    rows = [g.stats() for g in groups]
    out = out or os.path.join(root, "report")
    os.makedirs(out, exist_ok=True)
    table = markdown(rows)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(f"# Results of {root}\n\n{table}")
    write_csv(rows, os.path.join(out, "results.csv"))
    if plots:
        plot(groups, os.path.join(out, "curves.png"))
    print(table, end="")
    print(f"written to {out}")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gnj.report",
                                description="median-of-repeats results table of a sweep")
    p.add_argument("root", help="a sweep's root directory (or one workdir)")
    p.add_argument("--out", help="output directory (default <root>/report)")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    report(args.root, args.out, not args.no_plots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
