"""Results of a sweep: median and range over repeats, as the references report them.

    python -m gnj.report runs/gne_init            # prints the table; writes runs/gne_init/report/

Collects every run under the directory (a workdir holds ``config.json`` and ``metrics.jsonl``).
Runs laid out by ``launch.sweep`` (``<root>/<variant>/<repeat>``) are grouped by variant; any
other workdir is its own group. Per group:

- **best** eval accuracy of each run (its best evaluation, the references' best-epoch figure)
  and **final** eval accuracy (its last evaluation): median and [min, max] over repeats;
- **median-curve best**: the maximum over evaluation steps of the per-step median across repeats
  (Online Normalization's "best epoch on the median curve", REFERENCE.md §5.7);
- final eval loss (median), completed steps, number of repeats.

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

ACC, LOSS, TRAIN_LOSS = "eval/accuracy", "eval/loss", "train/loss"


@dataclasses.dataclass
class RunResult:
    workdir: str
    records: list[dict[str, Any]]
    config: dict[str, Any]

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
        return {
            "run": self.name, "n": len(self.runs),
            "best_median": _nanmedian(best), "best_min": _nanmin(best),
            "best_max": _nanmax(best),
            "final_median": _nanmedian(final), "final_min": _nanmin(final),
            "final_max": _nanmax(final),
            "median_curve_best": median_curve_best(self.runs),
            "final_loss_median": _nanmedian(np.array([r.final_loss for r in self.runs])),
            "steps": min(r.steps for r in self.runs),
        }


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


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
    cfg_path, metrics_path = (os.path.join(workdir, "config.json"),
                              os.path.join(workdir, "metrics.jsonl"))
    if not (os.path.exists(cfg_path) and os.path.exists(metrics_path)):
        return None
    with open(cfg_path) as f:
        config = json.load(f)
    records = []
    with open(metrics_path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a kill
    return RunResult(workdir, records, config)


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
        raise FileNotFoundError(f"report: no runs (config.json + metrics.jsonl) under {root!r}")
    return [Group(k, v) for k, v in sorted(groups.items())]


def _pct(v: float) -> str:
    return "—" if not math.isfinite(v) else f"{100 * v:.2f}"


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| run | n | best acc % median [min–max] | final acc % median [min–max] | "
             "median-curve best % | final eval loss | steps |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        loss = r["final_loss_median"]
        lines.append(
            f"| {r['run']} | {r['n']} | {_pct(r['best_median'])} "
            f"[{_pct(r['best_min'])}–{_pct(r['best_max'])}] | {_pct(r['final_median'])} "
            f"[{_pct(r['final_min'])}–{_pct(r['final_max'])}] | "
            f"{_pct(r['median_curve_best'])} | "
            f"{'—' if not math.isfinite(loss) else f'{loss:.4f}'} | {r['steps']} |")
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
