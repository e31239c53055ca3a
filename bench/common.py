"""Timing, FLOP and memory helpers shared by the benchmark cases, and the result table.

Timing protocol: every callable blocks until its result is ready (``block_until_ready`` for JAX,
a host read of a scalar for PyTorch). :func:`alternate` warms each callable up, then times them
in turns (gnj, peer, gnj, peer, ...) ``repeats`` times, each sample the mean of ``inner`` calls,
and returns the medians, so a background load that comes and goes hits both sides alike.
"""

from __future__ import annotations

import math
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

NAN = float("nan")


@dataclass
class Row:
    """One line of the table; times are medians in milliseconds."""

    case: str
    gnj_ms: float = NAN
    peer: str = ""
    peer_ms: float = NAN
    items: int = 1
    flops: float = NAN
    xla_mem_mb: float = NAN
    compile_s: float = NAN
    note: str = ""
    skipped: str = ""
    # filled by Table.add
    ratio: float = NAN
    items_per_s: float = NAN
    gflops: float = NAN
    frac_of_matmul: float = NAN
    max_rss_mb: float = NAN
    samples_gnj: list = field(default_factory=list)
    samples_peer: list = field(default_factory=list)


class Table:
    """Collects rows, prints each as it is measured, and serialises to JSON."""

    def __init__(self, matmul_gflops: float):
        self.matmul_gflops = matmul_gflops
        self.rows: list[Row] = []

    def add(self, r: Row) -> Row:
        if not r.skipped:
            r.ratio = r.peer_ms / r.gnj_ms if r.peer_ms == r.peer_ms else NAN
            r.items_per_s = r.items / (r.gnj_ms / 1e3)
            r.gflops = r.flops / (r.gnj_ms / 1e3) / 1e9
            r.frac_of_matmul = r.gflops / self.matmul_gflops
        r.max_rss_mb = max_rss_mb()
        self.rows.append(r)
        print(format_row(r), flush=True)
        return r

    def skip(self, case: str, reason: str) -> None:
        self.add(Row(case=case, skipped=reason))

    def to_json(self) -> dict:
        return {"matmul_gflops": self.matmul_gflops, "rows": [asdict(r) for r in self.rows]}


HEADER = (f"{'case':44s} {'gnj ms':>9s} {'peer':24s} {'peer ms':>9s} {'ratio':>6s} "
          f"{'GFLOP/s':>8s} {'%mm':>4s} {'xla MB':>7s} {'rss MB':>7s} {'comp s':>6s}  note")


def _f(v: float, fmt: str) -> str:
    return format(v, fmt) if v == v and not math.isinf(v) else "-"


def format_row(r: Row) -> str:
    if r.skipped:
        return f"{r.case:44s} SKIPPED: {r.skipped}"
    return (f"{r.case:44s} {_f(r.gnj_ms, '9.2f'):>9s} {r.peer[:24]:24s} "
            f"{_f(r.peer_ms, '9.2f'):>9s} {_f(r.ratio, '6.2f'):>6s} {_f(r.gflops, '8.1f'):>8s} "
            f"{_f(100 * r.frac_of_matmul, '4.0f'):>4s} {_f(r.xla_mem_mb, '7.0f'):>7s} "
            f"{_f(r.max_rss_mb, '7.0f'):>7s} {_f(r.compile_s, '6.1f'):>6s}  {r.note}")


def max_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss; monotone across rows)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], object], inner: int) -> float:
    """Mean seconds per call of ``fn`` (which must block on its own result) over ``inner``."""
    t = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t) / inner


def alternate(a: Callable, b: Callable | None, repeats: int, inner: int = 1,
              warmup: int = 2) -> tuple[float, float, list[float], list[float]]:
    """Median seconds per call of ``a`` and ``b`` timed in turns; also the raw samples."""
    for _ in range(warmup):
        a()
        if b is not None:
            b()
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(timed(a, inner))
        if b is not None:
            tb.append(timed(b, inner))
    return (statistics.median(ta), statistics.median(tb) if tb else NAN, ta, tb)


def matmul_rate(n: int = 2048, repeats: int = 7) -> float:
    """Measured float32 GFLOP/s of an n×n jitted matmul (the machine's peak reference)."""
    import jax
    import jax.numpy as jnp

    x = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    t, *_ = alternate(lambda: f(x).block_until_ready(), None, repeats, 3)
    return 2 * n**3 / t / 1e9


def compiled_stats(jitted, *args) -> tuple[float, float, object]:
    """(FLOPs from XLA's cost analysis, XLA buffer MB from its memory analysis, compiled).

    The memory figure is arguments + outputs + temporaries − aliased (donated) bytes of the
    compiled executable: the device memory one call needs, independent of other rows.
    """
    compiled = jitted.lower(*args).compile()
    flops = mem = NAN
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        flops = float(cost.get("flops", NAN))
    except Exception:  # noqa: BLE001 - cost analysis is optional per backend
        pass
    try:
        m = compiled.memory_analysis()
        mem = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes) / 2**20
    except Exception:  # noqa: BLE001
        pass
    return flops, mem, compiled


def torch_threads() -> None:
    """PyTorch uses every core, as XLA does."""
    import os

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
