"""Where the time of a jitted train step goes, by XLA op category (``make bench`` extra).

    python -m bench.profile_step [--model resnet20] [--batch 128] [--steps 3] [--top 15]

Traces ``--steps`` train steps with ``jax.profiler`` (XLA:CPU per-thunk trace events, enabled
by ``--xla_cpu_enable_xprof_traceme=true``, added to ``XLA_FLAGS`` here), reads the trace back
with the ``xprof`` package and sums the event durations of every XLA op on the CPU client's
threads, grouped by the op's category: its name without the numeric suffix
(``transpose_copy_fusion.30`` → ``transpose_copy_fusion``). Times are summed over threads, so
they add up to more than the wall time when ops run in parallel; the shares are what to read.
Work that Eigen runs in its own thread-pool tasks (the bodies of convolutions and matmuls) may be
attributed to the pool's ``ThreadpoolListener::Region`` rather than to the op, which is why
``unattributed`` (pool time outside any op event) is printed too.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile

MODELS = {
    "resnet20": {"name": "resnet_cifar", "depth": 20, "shortcut": "A", "norm": "batch"},
    "resnet56": {"name": "resnet_cifar", "depth": 56, "shortcut": "A", "norm": "batch"},
    "vgg_cfg10": {"name": "vgg", "cfg": "cfg_10", "norm": "batch"},
}


def op_categories(trace_events: list[dict], steps: int) -> tuple[dict[str, tuple[float, int]],
                                                                  float, float]:
    """({category: (ms per step, ops per step)}, attributed ms, pool-region ms) from events."""
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace_events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    total: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    region = 0.0
    for e in trace_events:
        if e.get("ph") != "X":
            continue
        thread = threads.get((e["pid"], e["tid"]), "")
        if "XLA" not in thread:
            continue
        name = e["name"]
        if name.startswith("ThreadpoolListener"):
            region += e.get("dur", 0.0)
            continue
        if name.startswith(("Thunk", "end: ")):
            continue
        cat = re.sub(r"\.\d+$", "", name)
        total[cat] += e.get("dur", 0.0)
        count[cat] += 1
    cats = {c: (t / steps / 1e3, count[c] // steps) for c, t in total.most_common()}
    return cats, sum(total.values()) / steps / 1e3, region / steps / 1e3


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20", choices=sorted(MODELS))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_enable_xprof_traceme=true").strip()
    from gnj import perf

    perf.apply()
    import jax

    try:
        from xprof.convert import raw_to_tool_data
    except ImportError:
        sys.exit("bench.profile_step needs the xprof package: pip install -e '.[bench]'")
    from bench.steps import gnj_step
    from gnj.models import build

    run, _, _, _ = gnj_step(build(MODELS[args.model], 10), (args.batch, 32, 32, 3))
    run()
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            for _ in range(args.steps):
                run()
        files = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)
        data, _ = raw_to_tool_data.xspace_to_tool_data(files, "trace_viewer", {})
    events = json.loads(data)
    events = events["traceEvents"] if isinstance(events, dict) else events
    cats, attributed, region = op_categories(events, args.steps)
    print(f"{args.model} b{args.batch}, XLA_FLAGS={os.environ['XLA_FLAGS']!r}")
    print(f"op time summed over threads: {attributed:.1f} ms/step; thread-pool regions "
          f"{region:.1f} ms/step (unattributed ≈ {max(region - attributed, 0):.1f})")
    print(f"{'ms/step':>9} {'share':>6} {'ops':>5}  category")
    for cat, (ms, n) in list(cats.items())[: args.top]:
        print(f"{ms:9.1f} {100 * ms / attributed:5.1f}% {n:5d}  {cat}")


if __name__ == "__main__":
    main()
