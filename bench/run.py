"""``make bench``: gnj against PyTorch (CPU build) on this machine, measured in the same run.

    python -m bench.run [--quick] [--cases train,ops,norms,...] [--repeats N] [--out bench.json]

Cases (``--cases``, comma-separated; default all): ``train`` (train steps of ResNet-20/56, VGG
cfg_10, NN-Mass dense MLP, each vs the same model written in PyTorch, with first-step compile
times; convs through oneDNN on CPU, ResNet-20 also with XLA's), ``ops`` (per-op breakdown of
the ResNet-20 step), ``norms`` (forward+backward of every registered norm relative to gnj
BatchNorm), ``online_norm`` (vs BatchNorm and a per-sample
PyTorch loop), ``ldi``, ``gne``, ``harness`` (full training loop vs the bare step) and
``xla_flags`` (the ResNet-20 step with and without gnj's XLA defaults, in subprocesses) and
``allocator`` (the same step with jemalloc preloaded and with glibc's malloc, in subprocesses),
``precision`` (the default config's step in bfloat16 against float32) and ``gpu`` (train steps
on a GPU against PyTorch CUDA, float32 and bfloat16; skipped without a GPU); see
``bench/scale.py``.

For each row gnj and its peer run alternately, ``--repeats`` times after warm-up; the table
shows medians and ``ratio`` = peer time / gnj time = gnj throughput / peer throughput (> 1: gnj
faster). GFLOP/s is XLA's cost-analysis FLOP count of the compiled computation divided by the
median time, ``%mm`` that rate as a fraction of the float32 matmul rate measured at the start of
the same run. ``xla MB``: arguments + outputs + temporaries of the compiled executable (XLA memory
analysis; the memory one call needs). ``rss MB``: the process's peak resident set so far
(``getrusage`` ru_maxrss; monotone across rows). Rows go to the console and ``--out`` as JSON.
Cases whose registry entry or module does not exist are skipped with the reason printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from bench.common import HEADER, NAN, Row, Table, alternate, compiled_stats, timed, torch_threads
from bench.steps import gnj_step


def _registered(kind: str, name: str) -> bool:
    import gnj.models  # noqa: F401 - fills the registries
    import gnj.nn  # noqa: F401
    from gnj import registry

    reg = getattr(registry, kind)
    return name in reg.names()


# ----------------------------------------------------------------------------- train steps


def torch_step(model, shape: tuple[int, ...], channels_last: bool = True) -> Callable:
    import torch

    from bench.torch_peers import torch_train_step

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = torch_train_step(model, opt)
    n, h, w, c = shape
    x = torch.randn(n, c, h, w).to(memory_format=fmt)
    y = torch.randint(0, 10, (n,))
    return lambda: step(x, y).item()


def train_cases(quick: bool) -> list[tuple[str, dict, tuple, Callable | None]]:
    from bench import torch_peers as tp

    def resnet(depth):
        return lambda m: tp.TorchResNetCifar(depth)

    def vgg(m):
        from gnj.models.vgg import resolve_cfg

        return tp.TorchVGG(resolve_cfg(m.cfg), 10)

    def mlp(m):
        return tp.TorchDenseMLP(m.structure(28 * 28))

    cases = [
        ("resnet20 b128", {"name": "resnet_cifar", "depth": 20, "shortcut": "A",
                           "norm": "batch"}, (128, 32, 32, 3), resnet(20)),
        ("resnet56 b128", {"name": "resnet_cifar", "depth": 56, "shortcut": "A",
                           "norm": "batch"}, (128, 32, 32, 3), resnet(56)),
        ("vgg cfg_10 b128", {"name": "vgg", "cfg": "cfg_10"}, (128, 32, 32, 3), vgg),
        ("dense_mlp w8 d8 tc10 b100", {"name": "dense_mlp", "width": 8, "depth": 8, "tc": 10},
         (100, 28, 28, 1), mlp),
    ]
    return [cases[0], cases[3]] if quick else cases


def xla_conv_flops(model, shape: tuple[int, ...]) -> float:
    """FLOPs of the train step by XLA's cost analysis of its XLA-conv formulation (a oneDNN
    custom call counts zero there)."""
    import jax
    import optax

    from gnj import train
    from gnj.nn.onednn_conv import use_impl

    tx = optax.sgd(0.1, momentum=0.9)
    with use_impl("xla"):
        step = train.make_train_step(model, tx, lambda x, k: x, optax.constant_schedule(0.1))
        state = jax.eval_shape(lambda: train.init_state(model, tx, shape[1:], 0))
        batch = {"image": jax.ShapeDtypeStruct(shape, "float32"),
                 "label": jax.ShapeDtypeStruct(shape[:1], "int32")}
        cost = jax.jit(lambda s, b: step(s, b)).lower(state, batch).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", NAN))


def case_train(table: Table, args) -> None:
    """Train step (forward, backward, SGD-momentum update) of each model vs PyTorch; for
    ResNet-20 also with XLA's convolutions instead of oneDNN's (``GNJ_CONV_IMPL=xla``)."""
    import jax.numpy as jnp

    from gnj.models import build
    from gnj.nn.onednn_conv import resolve_impl, use_impl

    torch_threads()
    impl = resolve_impl(jnp.float32)
    for name, cfg, shape, peer in train_cases(args.quick):
        if not _registered("MODELS", cfg["name"]):
            table.skip(f"train step {name}", f"model {cfg['name']!r} is not registered yet")
            continue
        model = build(cfg, 10)
        flops = xla_conv_flops(model, shape)
        tstep = torch_step(peer(model), shape, channels_last=len(shape) == 4 and shape[1] > 1
                           and cfg["name"] != "dense_mlp")
        inner = 10 if cfg["name"] == "dense_mlp" else 1
        impls = [impl] + (["xla"] if impl != "xla" and name.startswith("resnet20") else [])
        for conv_impl in impls:
            with use_impl(conv_impl):
                run, _, mem, compile_s = gnj_step(model, shape)
            g, p, sg, sp = alternate(run, tstep, args.repeats, inner)
            label = f"train step {name}" + (" (XLA convs)" if conv_impl != impl else "")
            table.add(Row(label, g * 1e3, "pytorch 2.13 cpu", p * 1e3, items=shape[0],
                          flops=flops, xla_mem_mb=mem, compile_s=compile_s,
                          note=f"{conv_impl} convs; compile = lower+compile+first step",
                          samples_gnj=sg, samples_peer=sp))


# ----------------------------------------------------------------------------- norms


def norm_fwd_bwd(spec: str, shape: tuple[int, ...]):
    """(run, flops, xla MB) of jax.grad of sum(norm(x)·g) w.r.t. params and x, training mode."""
    import jax
    import jax.numpy as jnp

    from gnj.models.common import make_norm

    layer = make_norm(spec)
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    g = jax.random.normal(jax.random.PRNGKey(2), shape)
    v = layer.init(jax.random.PRNGKey(1), x, True)
    colls = [c for c in v if c != "params"]

    def f(params, x, g):  # g is an argument: a closed-over constant would be constant-folded
        y = layer.apply({**v, "params": params}, x, True, mutable=colls)[0]
        return jnp.sum(y * g)

    grad = jax.jit(jax.grad(f, argnums=(0, 1)))
    params = v.get("params", {})
    flops, mem, compiled = compiled_stats(grad, params, x, g)
    return (lambda: jax.block_until_ready(compiled(params, x, g))), flops, mem


#: options for norms whose defaults do not fit the benchmark shape.
NORM_SPECS = {"group": "group(groups=32)", "ghost_batch": "ghost_batch(size=8)"}
NORM_SKIP = ("none", "identity", "plain", "batch", "online")


def case_norms(table: Table, args) -> None:
    from gnj.registry import NORMS

    shape = (8, 56, 56, 256) if args.quick else (32, 56, 56, 256)
    bn, _, _ = norm_fwd_bwd("batch", shape)
    seen = {id(NORMS.get(n)) for n in NORM_SKIP if n in NORMS.names()}
    for name in NORMS.names():
        entry = NORMS.get(name)
        if id(entry) in seen:
            continue
        seen.add(id(entry))
        try:
            fn, flops, mem = norm_fwd_bwd(NORM_SPECS.get(name, name), shape)
        except Exception as e:  # noqa: BLE001 - a norm that cannot run at this shape
            table.skip(f"norm {name} fwd+bwd", f"{type(e).__name__}: {str(e)[:80]}")
            continue
        g, b, sg, sb = alternate(fn, bn, args.repeats)
        table.add(Row(f"norm {name} fwd+bwd {shape}", g * 1e3, "gnj batch (same run)",
                      b * 1e3, items=shape[0], flops=flops, xla_mem_mb=mem,
                      note="ratio > 1: faster than BN", samples_gnj=sg, samples_peer=sb))


ONLINE_SPEC = ("online(decay_forward={af}, decay_backward={ab}, ecm='none', use_scale=False, "
               "use_bias=False)")


def case_online_norm(table: Table, args) -> None:
    """Online Norm fwd+bwd (the default path: the CPU kernel on one CPU device) against gnj
    BatchNorm, the per-sample PyTorch loop and gnj's own XLA path, per shape."""
    import jax.numpy as jnp
    import torch

    from bench.torch_peers import online_norm_per_sample
    from gnj.proj.online_norm.layer import resolve_impl, use_impl

    if not _registered("NORMS", "online"):
        table.skip("online_norm", "norm 'online' is not registered yet")
        return
    torch_threads()
    af, ab = 0.999, 0.99
    shapes = [(128, 32, 32, 16)] if args.quick else [(128, 32, 32, 16), (32, 56, 56, 256)]
    for shape in shapes:
        spec = ONLINE_SPEC.format(af=af, ab=ab)
        with use_impl("xla"):  # its FLOP count for every row: a custom call counts none
            xla, flops, xla_mem = norm_fwd_bwd(spec, shape)
        on, _, mem = norm_fwd_bwd(spec, shape)
        bn, _, _ = norm_fwd_bwd("batch(use_scale=False, use_bias=False)", shape)
        g, b, sg, sb = alternate(on, bn, args.repeats)
        table.add(Row(f"online_norm fwd+bwd {shape}", g * 1e3, "gnj batch (same run)", b * 1e3,
                      items=shape[0], flops=flops, xla_mem_mb=mem, samples_gnj=sg,
                      samples_peer=sb))
        xt = torch.randn(shape[0], shape[3], shape[1], shape[2])
        gt = torch.randn_like(xt)
        loop = lambda xt=xt, gt=gt: online_norm_per_sample(xt, gt, af, ab)[1].sum().item()
        g, p, sg, sp = alternate(on, loop, max(1, args.repeats // 2), warmup=1)
        table.add(Row(f"online_norm fwd+bwd {shape}", g * 1e3, "torch per-sample loop",
                      p * 1e3, items=shape[0], flops=flops, xla_mem_mb=mem,
                      note="the reference's algorithm", samples_gnj=sg, samples_peer=sp))
        g, p, sg, sp = alternate(on, xla, args.repeats)
        table.add(Row(f"online_norm kernel vs XLA path {shape}", g * 1e3,
                      "gnj XLA path (same run)", p * 1e3, items=shape[0], flops=flops,
                      xla_mem_mb=mem,
                      note=f"default path: {resolve_impl(jnp.float32)}; XLA path "
                           f"{xla_mem:.0f} MB", samples_gnj=sg, samples_peer=sp))


# ----------------------------------------------------------------------------- analysis


def case_ldi(table: Table, args) -> None:
    import jax
    import numpy as np
    import torch

    from bench.torch_peers import ldi_per_sample_layers

    try:
        from gnj.analysis import ldi
        from gnj.proj.nn_mass import analysis as nn_mass_analysis
    except ImportError as e:
        table.skip("LDI", f"gnj.analysis.ldi missing ({e})")
        return
    if not _registered("MODELS", "dense_mlp"):
        table.skip("LDI", "model 'dense_mlp' is not registered yet")
        return
    from gnj.models import build

    torch_threads()
    model = build({"name": "dense_mlp", "width": 8, "depth": 8, "tc": 10}, 10)
    x = jax.random.normal(jax.random.PRNGKey(0), (100, 28, 28, 1))
    v = model.init(jax.random.PRNGKey(1), x)
    fn = jax.jit(lambda v, x: ldi.ldi_arrays(nn_mass_analysis.dense_mlp_jacobians(model, v, x)))
    _, mem, compiled = compiled_stats(fn, v, x)
    run = lambda: jax.block_until_ready(compiled(v, x))
    layers = [tuple(None if a is None else torch.from_numpy(np.array(a)) for a in layer)
              for layer in nn_mass_analysis.dense_mlp_layers(model, v, x)]
    dphi = lambda z: torch.where(z > 0, torch.ones_like(z), torch.exp(z))
    ours = [float(a) for a in compiled(v, x)]
    theirs = [float(a) for a in ldi_per_sample_layers(layers, dphi)]
    g, p, sg, sp = alternate(run, lambda: ldi_per_sample_layers(layers, dphi), args.repeats)
    table.add(Row("LDI dense_mlp w8 d8 tc10 x100", g * 1e3, "torch per-sample svd", p * 1e3,
                  items=100, xla_mem_mb=mem, samples_gnj=sg, samples_peer=sp,
                  note=f"mean/std gnj {ours[0]:.4f}/{ours[1]:.4f} torch "
                       f"{theirs[0]:.4f}/{theirs[1]:.4f}"))


def case_gne(table: Table, args) -> None:
    import jax

    try:
        from gnj.analysis import moments as gne
    except ImportError as e:
        table.skip("GNE", f"gnj.analysis.gne missing ({e})")
        return
    from gnj.models import build

    model = build({"name": "resnet_cifar", "depth": 56}, 10)
    n, probes = (2, 2) if args.quick else (8, 16)
    images = jax.random.normal(jax.random.PRNGKey(0), (n, 32, 32, 3))
    v = model.init(jax.random.PRNGKey(1), images)
    t = time.perf_counter()
    result = gne.block_moments(model, v, images, probes, jax.random.PRNGKey(2),
                               exact_max_bytes=0)  # 0: force the matrix-free estimator
    s = time.perf_counter() - t
    table.add(Row(f"GNE moments, all {len(result)} blocks resnet56", s * 1e3, "(no peer)", NAN,
                  items=len(result), note=f"matrix-free Hutchinson, {n} inputs x {probes} "
                  "probes, one pass incl. compiles"))


# ----------------------------------------------------------------------------- harness


def case_harness(table: Table, args) -> None:
    """Steps/s of the full loop (data, metrics, checkpoints) vs the bare jitted step.

    The bare step runs pipelined, as a loop would: blocks of 20 dispatches on device-resident
    batches, one sync per block. The loop's time is its whole wall time after the first log
    window (which holds the compile), evaluation excluded: every metric write and periodic
    checkpoint save in it counts. Each loop run is paired with the bare blocks right before and
    after it (this machine's speed drifts by tens of percent over minutes); the row gives
    medians over the pairs. Two cadences: a save every 250 steps (~6 s of training here; the
    cifar10 config saves once per 390-step epoch) and every 100 (the digits default's).
    """
    import jax

    from configs import default
    from gnj import sharding, train
    from gnj.metrics import read_jsonl

    c = default.get_config()
    c.quiet = True
    c.log_every_steps, c.eval_every_steps = 20, 100000
    exp = train.build_experiment(c)
    batches = [sharding.global_batch(b, exp.mesh)
               for _, b in zip(range(20), exp.source.train_batches(0))]
    holder = {"s": exp.state}

    def bare_block():
        for b in batches:
            holder["s"], _ = exp.train_step(holder["s"], b)
        jax.block_until_ready(holder["s"])

    def bare_run() -> list[float]:
        return [timed(bare_block, 1) / len(batches) for _ in range(5)]

    def loop_run() -> float:
        with tempfile.TemporaryDirectory() as workdir:
            train.train_and_evaluate(c, workdir)
            windows = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
                       if "perf/steps_per_sec" in r]
        steps = [b["step"] - a["step"] for a, b in zip(windows, windows[1:])]
        seconds = [n / w["perf/steps_per_sec"] for n, w in zip(steps, windows[1:])]
        return sum(seconds) / sum(steps)

    bare_block()  # compile and warm
    cadences = [(250, 1000), (100, 400)] if not args.quick else [(100, 200)]
    for save_every, num_steps in cadences:
        c.checkpoint_every_steps, c.num_steps = save_every, num_steps
        pairs = []  # (loop s/step, bare s/step of the blocks right before and after it)
        for _ in range(2 if args.quick else 3):
            before, loop_s = bare_run(), loop_run()
            pairs.append((loop_s, statistics.median(before + bare_run())))
        ratios = [b / loop for loop, b in pairs]
        table.add(Row(f"harness: loop, save every {save_every} vs bare step",
                      statistics.median(p[0] for p in pairs) * 1e3,
                      "bare jitted step (pipelined)", statistics.median(p[1] for p in pairs) * 1e3,
                      items=c.batch_size, samples_gnj=[p[0] for p in pairs],
                      samples_peer=[p[1] for p in pairs],
                      note=f"default config, {num_steps} steps, log every 20; {len(pairs)} runs,"
                           f" ratio per run {', '.join(f'{r:.3f}' for r in ratios)}, median "
                           f"{statistics.median(ratios):.3f}; target >= 0.95"))


# ----------------------------------------------------------------------------- XLA flags A/B


CHILD = """
import json, statistics, sys, time
from gnj import perf
perf.apply()
import jax
from bench.steps import gnj_step
from gnj.models import build
model = build({"name": "resnet_cifar", "depth": 20, "shortcut": "A", "norm": "batch"}, 10)
run, flops, mem, compile_s = gnj_step(model, (128, 32, 32, 3))
run()
ts = []
for _ in range(int(sys.argv[1])):
    t = time.perf_counter(); run(); ts.append(time.perf_counter() - t)
print(json.dumps({"median": statistics.median(ts), "compile_s": compile_s}))
"""


def fresh_process_ab(env_on: dict[str, str], env_off: dict[str, str], args
                     ) -> tuple[list[float], list[float]]:
    """Seconds per ResNet-20 step (``CHILD``) in fresh processes, alternating on/off rounds."""
    res: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(2 if args.quick else 3):
        for mode, env in (("on", env_on), ("off", env_off)):
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.repeats)], env=env,
                                 capture_output=True, text=True, check=True)
            res[mode].append(json.loads(out.stdout.strip().splitlines()[-1])["median"])
    return res["on"], res["off"]


def _ab_row(case: str, peer: str, on: list[float], off: list[float], note: str) -> Row:
    return Row(case, statistics.median(on) * 1e3, peer, statistics.median(off) * 1e3, items=128,
               samples_gnj=on, samples_peer=off, note=note)


def case_xla_flags(table: Table, args) -> None:
    """ResNet-20 train step in fresh processes with and without ``gnj.perf``'s XLA defaults."""
    from gnj import perf

    base = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS_BASE", ""))
    on, off = fresh_process_ab(dict(base, GNJ_XLA_DEFAULTS="1"),
                               dict(base, GNJ_XLA_DEFAULTS="0"), args)
    table.add(_ab_row("xla flags: resnet20 step, gnj defaults on", "XLA defaults (off)", on, off,
                      " ".join(f"--{k}={v}" for k, v in perf.XLA_FLAG_DEFAULTS.items())))


def case_allocator(table: Table, args) -> None:
    """ResNet-20 step in fresh processes with jemalloc preloaded and with the C library's."""
    from gnj import perf

    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    extra = perf.allocator_env(base)
    if not extra:
        table.skip("allocator", "no jemalloc installed (apt-get install libjemalloc2)")
        return
    on, off = fresh_process_ab(dict(base, **extra), dict(base, GNJ_ALLOCATOR="system"), args)
    table.add(_ab_row("allocator: resnet20 step, jemalloc", "glibc malloc", on, off,
                      f"LD_PRELOAD={extra['LD_PRELOAD']} MALLOC_CONF={extra['MALLOC_CONF']}"))


CASES = {"train": case_train, "ops": None, "norms": case_norms, "online_norm": case_online_norm,
         "ldi": case_ldi, "gne": case_gne, "harness": case_harness, "xla_flags": case_xla_flags,
         "allocator": case_allocator, "precision": None, "gpu": None}  # None: filled in main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, small subset")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--cases", default=",".join(CASES), help=f"from {', '.join(CASES)}")
    parser.add_argument("--out", default="bench.json")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 7)
    names = [n for n in args.cases.split(",") if n]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; valid: {', '.join(CASES)}")

    from gnj import perf

    applied = perf.apply()  # before the first JAX computation
    import jax

    from bench.common import matmul_rate
    from bench.ops import case_ops

    CASES["ops"] = case_ops
    from bench.scale import case_gpu, case_precision

    CASES.update(precision=case_precision, gpu=case_gpu)
    peak = matmul_rate()
    table = Table(peak)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"python {platform.python_version()}, jax {jax.__version__}")
    try:
        import torch

        machine += f", torch {torch.__version__}"
    except ImportError:
        pass
    print(f"machine: {machine}; float32 matmul {peak:.0f} GFLOP/s; XLA_FLAGS="
          f"{os.environ.get('XLA_FLAGS', '')!r} (gnj defaults {'on' if applied else 'off'})")
    print(HEADER, flush=True)
    t0 = time.perf_counter()
    for name in names:
        CASES[name](table, args)
    out = table.to_json()
    out.update(machine=machine, xla_flags=os.environ.get("XLA_FLAGS", ""),
               command=" ".join(["python -m bench.run", *(argv or sys.argv[1:])]),
               seconds=time.perf_counter() - t0)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
