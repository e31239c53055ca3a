"""``make bench``: gnj against PyTorch (CPU build) on this machine, measured in the same run.

    python -m bench.run [--quick] [--cases train,norms,online_norm,ldi,gne,harness]

For each case gnj and its peer run alternately, ``--repeats`` times after warm-up; the table
shows medians and the ratio (gnj throughput / peer throughput, > 1 means gnj is faster). GFLOP/s
comes from XLA's cost analysis of the compiled step, as a fraction of the float32 matmul rate
measured at the start of the run; peak memory is the process's max RSS (whole process, so it
only grows across rows). Results go to the console and ``bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROWS: list[dict] = []


def timed(fn: Callable[[], object], inner: int) -> float:
    t = time.perf_counter()
    for _ in range(inner):
        out = fn()
    jax.block_until_ready(out) if not hasattr(out, "item") or isinstance(out, jax.Array) else None
    return (time.perf_counter() - t) / inner


def alternate(a: Callable, b: Callable | None, repeats: int, inner: int) -> tuple[float, float]:
    """Median seconds per call of ``a`` and ``b``, measured alternately after one warm-up each."""
    a()
    if b is not None:
        b()
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(timed(a, inner))
        if b is not None:
            tb.append(timed(b, inner))
    return statistics.median(ta), (statistics.median(tb) if tb else float("nan"))


def matmul_rate() -> float:
    n = 2048
    x = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    t, _ = alternate(lambda: f(x).block_until_ready(), None, 5, 3)
    return 2 * n**3 / t / 1e9


def flops_of(jitted, *args) -> float:
    try:
        cost = jitted.lower(*args).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return float(cost.get("flops", float("nan")))
    except Exception:
        return float("nan")


def row(case: str, gnj_s: float, peer_s: float, peer: str, unit_items: int, flops: float,
        peak: float, note: str = "") -> None:
    r = dict(case=case, gnj_ms=gnj_s * 1e3, peer=peer, peer_ms=peer_s * 1e3,
             ratio=(peer_s / gnj_s) if peer_s == peer_s else float("nan"),
             gnj_items_per_s=unit_items / gnj_s, gflops=flops / gnj_s / 1e9,
             frac_of_matmul=flops / gnj_s / 1e9 / peak, max_rss_mb=resource.getrusage(
                 resource.RUSAGE_SELF).ru_maxrss / 1024, note=note)
    ROWS.append(r)
    print(f"{case:34s} gnj {r['gnj_ms']:9.2f} ms | {peer:22s} {r['peer_ms']:9.2f} ms | "
          f"ratio {r['ratio']:6.2f} | {r['gflops']:6.1f} GFLOP/s ({r['frac_of_matmul']:.0%}) | "
          f"rss {r['max_rss_mb']:.0f} MB {note}", flush=True)


# ----------------------------------------------------------------------------- cases


def gnj_step(model, shape, batch, lr=0.1):
    from gnj import train

    tx = optax.sgd(lr, momentum=0.9)
    t0 = time.perf_counter()
    state = train.init_state(model, tx, shape[1:], 0)
    step = jax.jit(train.make_train_step(model, tx, lambda x, k: x, optax.constant_schedule(lr)),
                   donate_argnums=0)
    rng = np.random.default_rng(0)
    b = {"image": jnp.asarray(rng.normal(size=shape), jnp.float32),
         "label": jnp.asarray(rng.integers(0, 10, shape[0]), jnp.int32)}
    flops = flops_of(step, state, b)
    state, m = step(state, b)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    holder = {"s": state}

    def run():
        holder["s"], m = step(holder["s"], b)
        return m["train/loss"].block_until_ready()

    return run, flops, compile_s


def case_train(args, peak):
    import torch

    from bench.torch_peers import TorchResNetCifar, torch_train_step
    from gnj.models import build

    torch.set_num_threads(os.cpu_count() or 1)
    for depth in (20, 56):
        bsz = 128
        model = build({"name": "resnet_cifar", "depth": depth, "shortcut": "A"}, 10)
        run, flops, compile_s = gnj_step(model, (bsz, 32, 32, 3), None)
        tm = TorchResNetCifar(depth).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(tm.parameters(), lr=0.1, momentum=0.9)
        tstep = torch_train_step(tm, opt)
        x = torch.randn(bsz, 3, 32, 32).to(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (bsz,))
        g, p = alternate(run, lambda x=x, y=y, tstep=tstep: tstep(x, y).item(), args.repeats,
                         2 if args.quick else 5)
        row(f"train step resnet{depth} b{bsz}", g, p, "pytorch 2.13 cpu", bsz, flops, peak,
            f"compile {compile_s:.1f}s")
    for name, cfg, shape in [("vgg cfg_10 b128", {"name": "vgg", "cfg": "cfg_10"},
                              (128, 32, 32, 3)),
                             ("dense_mlp w8 d8 tc10 b100",
                              {"name": "dense_mlp", "width": 8, "depth": 8, "tc": 10},
                              (100, 28, 28, 1))]:
        run, flops, compile_s = gnj_step(build(cfg, 10), shape, None)
        g, _ = alternate(run, None, args.repeats, 2 if args.quick else 5)
        row(f"train step {name}", g, float("nan"), "(no peer)", shape[0], flops, peak,
            f"compile {compile_s:.1f}s")


def fwd_bwd(norm_spec: str, shape) -> tuple[Callable, float]:
    from gnj.models.common import make_norm

    layer = make_norm(norm_spec)
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    v = layer.init(jax.random.PRNGKey(1), x)
    g = jax.random.normal(jax.random.PRNGKey(2), shape)
    colls = [c for c in v if c != "params"]

    def f(params, x):
        y, _ = layer.apply({**v, "params": params}, x, True, mutable=colls)
        return jnp.sum(y * g)

    grad = jax.jit(jax.grad(f, argnums=(0, 1)))
    params = v.get("params", {})
    flops = flops_of(grad, params, x)
    return (lambda: jax.block_until_ready(grad(params, x))), flops


TINY_SPECS = {"group": "group(groups=32)", "ghost_batch": "ghost_batch(size=8)"}


def case_norms(args, peak):
    from gnj.registry import NORMS

    shape = (8, 56, 56, 256) if args.quick else (32, 56, 56, 256)
    bn, _ = fwd_bwd("batch", shape)
    seen = set()
    for name in NORMS.names():
        entry = NORMS.get(name)
        if id(entry) in seen or name in ("none", "batch", "online"):
            seen.add(id(entry))
            continue
        seen.add(id(entry))
        fn, flops = fwd_bwd(TINY_SPECS.get(name, name), shape)
        g, b = alternate(fn, bn, args.repeats, 1)
        row(f"norm {name} fwd+bwd {shape}", g, b, "gnj batch (same run)", shape[0], flops, peak)


def case_online_norm(args, peak):
    import torch

    from bench.torch_peers import online_norm_per_sample

    shapes = [(128, 32, 32, 16), (32, 56, 56, 256)]
    for shape in shapes:
        on, flops = fwd_bwd("online(decay_forward=0.999, decay_backward=0.99, ecm='none', "
                            "use_scale=False, use_bias=False)", shape)
        bn, _ = fwd_bwd("batch(use_scale=False, use_bias=False)", shape)
        g, b = alternate(on, bn, args.repeats, 1)
        row(f"online_norm fwd+bwd {shape}", g, b, "gnj batch (same run)", shape[0], flops, peak)
        xt = torch.randn(shape[0], shape[3], shape[1], shape[2])
        gt = torch.randn_like(xt)
        g, p = alternate(on, lambda xt=xt, gt=gt: online_norm_per_sample(xt, gt, 0.999, 0.99),
                         1 if args.quick else 3, 1)
        row(f"online_norm fwd+bwd {shape}", g, p, "torch per-sample loop", shape[0], flops, peak)


def case_ldi(args, peak):
    import torch

    from bench.torch_peers import ldi_per_sample
    from gnj.analysis import ldi
    from gnj.models import build

    model = build({"name": "dense_mlp", "width": 8, "depth": 8, "tc": 10}, 10)
    x = jax.random.normal(jax.random.PRNGKey(0), (100, 784))
    v = model.init(jax.random.PRNGKey(1), x)
    fn = jax.jit(lambda v, x: ldi.ldi_arrays(ldi.dense_mlp_jacobians(model, v, x)))
    run = lambda: jax.block_until_ready(fn(v, x))
    _, st = model.apply(v, x, mutable=["intermediates"])
    pres = [torch.from_numpy(np.array(st["intermediates"][f"pre{j}"][0])) if j != 1 else None
            for j in range(8)]
    ws = [torch.from_numpy(np.asarray(v["params"][f"layer{j}"]["kernel"]).T.copy())
          for j in range(8)]
    dphi = lambda z: torch.where(z > 0, torch.ones_like(z), torch.exp(z))
    g, p = alternate(run, lambda: ldi_per_sample(ws, pres, dphi), args.repeats, 1)
    row("LDI dense_mlp w8 d8 tc10 x100", g, p, "torch per-sample svd", 100, float("nan"), peak)


def case_gne(args, peak):
    from gnj.analysis.run import analyze
    from gnj.models import build

    model = build({"name": "resnet_cifar", "depth": 56}, 10)
    images = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
    v = model.init(jax.random.PRNGKey(1), images)
    t = time.perf_counter()
    result = analyze(model, v, images, num_probes=4)
    s = time.perf_counter() - t
    row(f"GNE moments, all {len(result['blocks'])} blocks resnet56", s, float("nan"),
        "(target < 60 s)", 1, float("nan"), peak, "matrix-free, 4 inputs x 4 probes")


def case_harness(args, peak):
    """Steps/s of the full loop (data, metrics, checkpoints) vs the bare jitted step."""
    from configs import default
    from gnj import sharding, train
    from gnj.metrics import read_jsonl

    c = default.get_config()
    c.quiet = True
    c.num_steps = 200 if args.quick else 600
    c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 20, 100000, 100
    exp = train.build_experiment(c)
    batches = [sharding.global_batch(b, exp.mesh)
               for _, b in zip(range(20), exp.source.train_batches(0))]
    holder = {"s": exp.state, "i": 0}

    def bare():
        holder["s"], m = exp.train_step(holder["s"], batches[holder["i"] % 20])
        holder["i"] += 1
        return m["train/loss"].block_until_ready()

    bare_s, _ = alternate(bare, None, args.repeats, 20)
    with tempfile.TemporaryDirectory() as workdir:
        train.train_and_evaluate(c, workdir)
        rates = [r["perf/steps_per_sec"] for r in read_jsonl(os.path.join(workdir,
                                                                           "metrics.jsonl"))][1:]
    loop_s = 1.0 / statistics.median(rates)
    row("full gnj.main loop vs bare step", loop_s, bare_s, "bare jitted step", 1, float("nan"),
        peak, "ratio = loop throughput / bare")


CASES = {"train": case_train, "norms": case_norms, "online_norm": case_online_norm,
         "ldi": case_ldi, "gne": case_gne, "harness": case_harness}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--out", default="bench.json")
    args = parser.parse_args()
    args.repeats = args.repeats or (3 if args.quick else 7)
    peak = matmul_rate()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"jax {jax.__version__}; float32 matmul {peak:.0f} GFLOP/s", flush=True)
    for name in args.cases.split(","):
        CASES[name](args, peak)
    with open(args.out, "w") as f:
        json.dump({"matmul_gflops": peak, "rows": ROWS}, f, indent=2)


if __name__ == "__main__":
    main()
