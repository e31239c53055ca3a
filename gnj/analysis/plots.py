"""Plots of a workdir or of a sweep (command line; figures from ``gnj.analysis.figures``).

    python -m gnj.analysis.plots runs/default            # one workdir: grad_norms.png
    python -m gnj.analysis.plots runs/sweep --analyze    # analyse each run first, then plot

The root is a workdir or a sweep root (``launch.sweep``'s ``<root>/<variant>/<repeat>`` layout,
or any tree of workdirs, ``gnj.workdir.find_workdirs``):

- every workdir whose ``metrics.jsonl`` has gradient norms (the ``probes`` train hook) gets
  ``<workdir>/analysis/grad_norms.png``;
- every registered sweep hook (``gnj.analysis.hooks``) gets the ``analysis.json`` of every run
  and writes its figures under ``<root>/analysis/`` (the core's ``compare``: φ by block and the
  network spectrum of two or more runs, ``compare.png``; papers add theirs).

``--analyze`` first runs the ``--mode=analyze`` analysis (``gnj.analysis.run``) on every workdir
that has a ``config.json`` but no ``analysis/analysis.json``, with the config rebuilt from that
``config.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from gnj import metrics
from gnj.analysis import figures, hooks, run
from gnj.workdir import CONFIG_FILE, find_workdirs

ANALYSIS_FILE = os.path.join("analysis", "analysis.json")


def analyses(root: str) -> dict[str, dict[str, Any]]:
    """``{run (path relative to root): analysis.json}`` of every run under ``root`` that has
    one."""
    out = {}
    for wd in find_workdirs(root):
        path = os.path.join(wd, ANALYSIS_FILE)
        if os.path.exists(path):
            with open(path) as f:
                out[os.path.relpath(wd, root)] = json.load(f)
    return out


def load_config(workdir: str) -> Any:
    """The run's config from its ``config.json`` (JSON lists back to tuples, as configs hold)."""
    import ml_collections

    def tuples(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: tuples(x) for k, x in v.items()}
        if isinstance(v, list):
            return tuple(tuples(x) for x in v)
        return v

    with open(os.path.join(workdir, CONFIG_FILE)) as f:
        return ml_collections.ConfigDict(tuples(json.load(f)))


def make_plots(root: str, analyze: bool = False) -> list[str]:
    """Every plot :func:`main` writes for ``root`` (see the module docstring); their paths."""
    written = []
    for wd in find_workdirs(root):
        if analyze and os.path.exists(os.path.join(wd, CONFIG_FILE)) and not os.path.exists(
                os.path.join(wd, ANALYSIS_FILE)):
            run.run(load_config(wd), wd)
        metrics_path = os.path.join(wd, "metrics.jsonl")
        if os.path.exists(metrics_path) and figures.has_grad_norms(
                metrics.read_jsonl(metrics_path)):
            os.makedirs(os.path.join(wd, "analysis"), exist_ok=True)
            written.append(figures.plot_grad_norms(
                metrics_path, os.path.join(wd, "analysis", "grad_norms.png")))
    results = analyses(root)
    for sweep_plot in hooks.of_kind(hooks.SWEEP).values():
        written += sweep_plot(root, results)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gnj.analysis.plots",
                                description="gradient-norm and sweep plots of a workdir or a "
                                "sweep")
    p.add_argument("root", help="a workdir or a sweep's root directory")
    p.add_argument("--analyze", action="store_true",
                   help="first run --mode=analyze on every workdir without analysis.json")
    args = p.parse_args(argv)
    written = make_plots(args.root, args.analyze)
    if not written:
        print(f"gnj.analysis.plots: nothing to plot under {args.root!r}: no metrics.jsonl with "
              "grad_l2/* or probe/*/grad_norm (train with --config.analysis.probe_every_steps=N)"
              " and no analysis/analysis.json a sweep plot uses (run --mode=analyze, or pass "
              "--analyze)", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
