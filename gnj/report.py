"""Results of a sweep: median and range over repeats.

    python -m gnj.report runs/sweep            # prints the table; writes runs/sweep/report/

Collects every run under the directory (``gnj.workdir.find_workdirs``: a workdir holds
``config.json`` and ``metrics.jsonl``, or only ``analysis/analysis.json`` for an analysed
initialisation). Runs laid out by ``launch.sweep`` (``<root>/<variant>/<repeat>``) are grouped by
variant; any other workdir is its own group. Per group:

- **best** eval accuracy of each run (its best evaluation) and **final** eval accuracy (its last
  evaluation): median and [min, max] over repeats;
- **median-curve best**: the maximum over evaluation steps of the per-step median across repeats;
- final eval loss (median), completed steps, number of repeats;
- where the runs logged them (median over repeats): **gradient-norm spread** from the train-time
  probes' ``grad_l2/<param>`` = ‖∂L/∂W‖², max/min over layers of ‖∂L/∂W‖ at the first and at the
  last probe (1 = equal gradient norms; every kernel with ≥ 2 axes counts); **weight
  correlations** from ``corr/<layer>/forward`` = −log|ρ| (``gnj.analysis.correlations``), the
  smallest and the largest over layers at the last record (0 = that layer's filters are
  identical), and ``corr/diversity``;
- the columns registered by analysis hooks of kind ``report`` (``gnj.analysis.hooks``), e.g. a
  paper's values from ``analysis/analysis.json``.

A column is shown in ``results.md`` when any group has a finite value. Writes
``report/results.md`` and ``report/results.csv`` (one row per group) and PNG curves
``report/curves.png`` (median eval accuracy and train loss against step, one line per group,
the repeats' range shaded). See docs/analysis.md#report.
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
from gnj.workdir import find_workdirs

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
        """The group's row of the table (see the module docstring)."""
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
        }
        for column in hook_columns():
            extra[column.key] = _nanmedian(np.array([_number(column.value(r))
                                                     for r in self.runs], float))
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


def hook_columns() -> tuple[Any, ...]:
    """The report columns registered by analysis hooks (``gnj.analysis.hooks.Column``)."""
    from gnj.analysis import hooks  # imports JAX: only when a table is made

    return hooks.registered_columns()


def _number(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


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
        records = metrics.read_jsonl(metrics_path)
    return RunResult(workdir, records, config, analysis)


def collect(root: str) -> list[Group]:
    """Every run under ``root``, grouped by variant (``<variant>/<repeat>`` layout)."""
    groups: dict[str, list[RunResult]] = {}
    for dirpath in find_workdirs(root):
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
    columns = EXTRA_COLUMNS + tuple((c.key, c.header, c.fmt) for c in hook_columns())
    extra = [c for c in columns if _has(rows, c[0])]
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
