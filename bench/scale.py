"""Benchmark cases for scaling out: mixed precision on this machine, and a GPU case set.

- ``precision``: the default config's train step (``configs/default.py``: BatchNorm ResNet-8,
  width 16, 8×8×1 digits, batch 128) with ``model.dtype=bfloat16`` (float32 parameters) against
  the same step in float32, alternated in one process; with ``--quick`` only that row, otherwise
  also ResNet-20 at batch 128 on 32×32×3. ``ratio`` = float32 time / bfloat16 time (> 1: bfloat16
  faster). The note counts the convolutions that are bfloat16 in the program and in the compiled
  executable (XLA:CPU computes bfloat16 convolutions in float32, converting their operands: the
  bfloat16 step saves memory traffic in the elementwise work and the stored activations, not
  convolution arithmetic), and the converts the policy adds.
- ``gpu``: when JAX's default backend is a GPU, ResNet-20 and ResNet-56 train steps at batch 128
  (32×32×3) in float32 and in bfloat16 against the same models in PyTorch on CUDA (float32, and
  ``torch.autocast`` bfloat16), channels-last; skipped with the reason otherwise. TF32: PyTorch's
  convolutions use it by default on Ampere and newer, and so does XLA's default precision.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.common import Row, Table, alternate


def _bf16():
    import jax.numpy as jnp

    from gnj import precision

    return precision.Precision(jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))


def _hlo_counts(model, shape: tuple[int, ...], policy) -> tuple[int, int, int, int]:
    """(bf16 convolutions in the program, bf16 convolutions after compilation, convolutions,
    converts after compilation) of the step: XLA may compute a bf16 convolution in float32
    (XLA:CPU does), converting its operands."""
    import jax
    import jax.numpy as jnp
    import optax

    from gnj import train

    tx = optax.sgd(0.1, momentum=0.9)
    state = jax.eval_shape(lambda: train.init_state(model, tx, shape[1:], 0, policy))
    batch = {"image": jax.ShapeDtypeStruct(shape, jnp.float32),
             "label": jax.ShapeDtypeStruct(shape[:1], jnp.int32)}
    step = jax.jit(train.make_train_step(model, tx, lambda x, k: x, optax.constant_schedule(0.1),
                                         0.0, policy))
    lowered = step.lower(state, batch)
    program = [line for line in lowered.as_text().splitlines() if "stablehlo.convolution" in line]
    compiled = lowered.compile().as_text()
    convs = [line for line in compiled.splitlines() if " convolution(" in line]
    return (sum("bf16" in line for line in program), sum("= bf16[" in line for line in convs),
            len(program), compiled.count(" convert("))


def case_precision(table: Table, args) -> None:
    """Default-config train step, bfloat16 compute vs float32, on this machine."""
    from bench.steps import gnj_step
    from configs import default
    from gnj import precision
    from gnj.models import build

    c = default.get_config()
    cases = [("default config", dict(c.model), (c.batch_size, 8, 8, 1))]
    if not args.quick:
        cases.append(("resnet20 b128", {"name": "resnet_cifar", "depth": 20, "shortcut": "A",
                                        "norm": "batch"}, (128, 32, 32, 3)))
    for name, cfg, shape in cases:
        model = build(cfg, 10)
        run16, flops, mem, compile_s = gnj_step(model, shape, policy=_bf16())
        run32, *_ = gnj_step(model, shape, policy=precision.FLOAT32)
        t16, t32, s16, s32 = alternate(run16, run32, args.repeats)
        asked, compiled, convs, converts = _hlo_counts(model, shape, _bf16())
        converts32 = _hlo_counts(model, shape, precision.FLOAT32)[3]
        table.add(Row(f"precision: {name} step, bfloat16", t16 * 1e3, "same step, float32",
                      t32 * 1e3, items=shape[0], flops=flops, xla_mem_mb=mem,
                      compile_s=compile_s, samples_gnj=s16, samples_peer=s32,
                      note=f"convolutions in bf16: {asked}/{convs} in the program, {compiled}"
                           f"/{convs} as compiled; {converts} converts (float32: {converts32})"))


def _torch_cuda_step(depth: int, shape: tuple[int, ...], bf16: bool) -> Callable:
    import torch
    import torch.nn.functional as F

    from bench.torch_peers import TorchResNetCifar

    model = TorchResNetCifar(depth).to("cuda", memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    n, h, w, c = shape
    x = torch.randn(n, c, h, w, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (n,), device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()  # a host read: waits for the step

    return step


def case_gpu(table: Table, args) -> None:
    """ResNet-20/56 train steps on a GPU, float32 and bfloat16, vs PyTorch CUDA."""
    import jax

    from bench.steps import gnj_step
    from gnj import precision
    from gnj.models import build

    if jax.default_backend() != "gpu":
        table.skip("gpu", f"no GPU: JAX's backend is {jax.default_backend()!r} (on a CUDA "
                          f"machine: pip install -e '.[gpu]')")
        return
    try:
        import torch

        cuda = torch.cuda.is_available()
        peer_name = f"pytorch {torch.__version__.split('+')[0]} cuda"
    except ImportError:
        cuda, peer_name = False, "pytorch not installed"
    device = jax.devices()[0].device_kind
    depths = (20,) if args.quick else (20, 56)
    for depth in depths:
        model = build({"name": "resnet_cifar", "depth": depth, "shortcut": "A",
                       "norm": "batch"}, 10)
        shape = (128, 32, 32, 3)
        for dtype, policy in (("float32", precision.FLOAT32), ("bfloat16", _bf16())):
            run, flops, mem, compile_s = gnj_step(model, shape, policy=policy)
            peer = _torch_cuda_step(depth, shape, dtype == "bfloat16") if cuda else None
            g, p, sg, sp = alternate(run, peer, args.repeats, inner=5)
            table.add(Row(f"gpu {dtype}: resnet{depth} b128 step", g * 1e3,
                          f"{peer_name} {'autocast bf16' if dtype == 'bfloat16' else 'fp32'}"
                          if cuda else "no CUDA torch", p * 1e3, items=shape[0], flops=flops,
                          xla_mem_mb=mem, compile_s=compile_s, samples_gnj=sg,
                          samples_peer=sp, note=device))
