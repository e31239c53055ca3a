"""Per-op breakdown of the ResNet-20 train step (batch 128), gnj against PyTorch.

Each op of the step is timed on its own, jitted alone, at every shape it has in ResNet-20, and
multiplied by how often that shape occurs: forward convs, input-gradient convs (not for the stem:
neither framework differentiates w.r.t. the image), weight-gradient convs, BatchNorm forward +
backward, and the SGD-momentum update of all parameters. The sum is an estimate; the fused
step can be faster or slower than its parts. Convs go through ``gnj.nn.conv`` as in the models
(oneDNN on CPU for float32 unless ``$GNJ_CONV_IMPL=xla``; the row's note names the path).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from bench.common import Row, Table, alternate

B = 128
#: (name, H, W, Cin, Cout, stride, count) of the 3×3 convs of ResNet-20 at 32×32 input.
RESNET20_CONVS = [
    ("stem 32x32 3->16", 32, 32, 3, 16, 1, 1),
    ("32x32 16->16", 32, 32, 16, 16, 1, 6),
    ("32x32 16->32 s2", 32, 32, 16, 32, 2, 1),
    ("16x16 32->32", 16, 16, 32, 32, 1, 5),
    ("16x16 32->64 s2", 16, 16, 32, 64, 2, 1),
    ("8x8 64->64", 8, 8, 64, 64, 1, 5),
]
#: (H, W, C, count) of the BatchNorms of ResNet-20.
RESNET20_NORMS = [(32, 32, 16, 7), (16, 16, 32, 6), (8, 8, 64, 6)]

DN = ("NHWC", "HWIO", "NHWC")


def jax_conv(stride: int) -> Callable:
    from gnj.nn.conv import conv_general_dilated

    return lambda x, k: conv_general_dilated(x, k, (stride, stride), ((1, 1), (1, 1)),
                                             dimension_numbers=DN)


def gnj_conv_ops(h, w, cin, cout, stride):
    """Jitted (fwd, input grad, weight grad) closures of one conv shape."""
    key = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(key[0], (B, h, w, cin))
    k = jax.random.normal(key[1], (3, 3, cin, cout)) * 0.1
    conv = jax_conv(stride)
    dy = jax.random.normal(key[2], conv(x, k).shape)
    fwd = jax.jit(conv)
    dgrad = jax.jit(lambda x, k, dy: jax.vjp(lambda x: conv(x, k), x)[1](dy)[0])
    wgrad = jax.jit(lambda x, k, dy: jax.vjp(lambda k: conv(x, k), k)[1](dy)[0])
    return (lambda: fwd(x, k).block_until_ready(),
            lambda: dgrad(x, k, dy).block_until_ready(),
            lambda: wgrad(x, k, dy).block_until_ready())


def torch_conv_ops(h, w, cin, cout, stride):
    import torch
    import torch.nn.functional as F

    cl = torch.channels_last
    x = torch.randn(B, cin, h, w).to(memory_format=cl)
    k = (torch.randn(cout, cin, 3, 3) * 0.1).to(memory_format=cl)
    dy = torch.randn_like(F.conv2d(x, k, stride=stride, padding=1)).to(memory_format=cl)
    bwd = torch.ops.aten.convolution_backward

    def grad(mask):
        out = bwd(dy, x, k, None, [stride] * 2, [1, 1], [1, 1], False, [0, 0], 1, mask)
        return out[0] if mask[0] else out[1]

    with torch.no_grad():
        return (lambda: F.conv2d(x, k, stride=stride, padding=1).sum().item(),
                lambda: grad([True, False, False]).sum().item(),
                lambda: grad([False, True, False]).sum().item())


def gnj_bn(h, w, c):
    from gnj.models.common import make_norm

    layer = make_norm("batch")
    x = jax.random.normal(jax.random.PRNGKey(0), (B, h, w, c))
    g = jax.random.normal(jax.random.PRNGKey(1), x.shape)
    v = layer.init(jax.random.PRNGKey(2), x, True)

    def loss(params, x, g):
        y, _ = layer.apply({**v, "params": params}, x, True, mutable=["batch_stats"])
        return jnp.sum(y * g)

    f = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return lambda: jax.block_until_ready(f(v["params"], x, g))


def torch_bn(h, w, c):
    import torch

    bn = torch.nn.BatchNorm2d(c)
    x = torch.randn(B, c, h, w).to(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn_like(x)

    def run():
        y = bn(x)
        y.backward(g)
        return x.grad.sum().item()

    return run


def optimizer_ops():
    """(gnj optax SGD-momentum update, torch.optim.SGD step) over ResNet-20's parameters."""
    import optax
    import torch

    from bench.torch_peers import TorchResNetCifar
    from gnj.models import build

    model = build({"name": "resnet_cifar", "depth": 20, "shortcut": "A"}, 10)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
    grads = jax.tree.map(jnp.ones_like, params)
    tx = optax.sgd(0.1, momentum=0.9)
    opt_state = tx.init(params)

    def update(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    upd = jax.jit(update, donate_argnums=(0, 1))
    holder = {"p": params, "s": opt_state}

    def gnj_run():
        holder["p"], holder["s"] = upd(holder["p"], holder["s"], grads)
        jax.block_until_ready(holder["p"])

    tm = TorchResNetCifar(20)
    for p in tm.parameters():
        p.grad = torch.ones_like(p)
    opt = torch.optim.SGD(tm.parameters(), lr=0.1, momentum=0.9)

    def torch_run():
        opt.step()
        return tm.head.weight[0, 0].item()

    return gnj_run, torch_run


def case_ops(table: Table, args) -> None:
    """Rows ``op <kind> <shape>`` per conv shape, then totals per op kind."""
    from gnj.nn.onednn_conv import resolve_impl

    totals: dict[str, list[float]] = {}
    reps = args.repeats
    impl = resolve_impl(jnp.float32)
    shapes = RESNET20_CONVS[:2] if args.quick else RESNET20_CONVS
    for name, h, w, cin, cout, stride, count in shapes:
        g_ops = gnj_conv_ops(h, w, cin, cout, stride)
        t_ops = torch_conv_ops(h, w, cin, cout, stride)
        for kind, g, t in zip(("fwd conv", "input-grad conv", "weight-grad conv"), g_ops, t_ops):
            if kind == "input-grad conv" and name.startswith("stem"):
                continue
            gs, ts, sg, st = alternate(g, t, reps, 3)
            flops = 2 * B * (h // stride) * (w // stride) * 9 * cin * cout
            table.add(Row(f"op {kind} {name} x{count}", gs * 1e3, "pytorch conv", ts * 1e3,
                          items=B, flops=flops,
                          note=f"per call; {count} in the step; {impl} conv",
                          samples_gnj=sg, samples_peer=st))
            tot = totals.setdefault(kind, [0.0, 0.0])
            tot[0] += count * gs
            tot[1] += count * ts
    for h, w, c, count in RESNET20_NORMS[: 1 if args.quick else None]:
        gs, ts, sg, st = alternate(gnj_bn(h, w, c), torch_bn(h, w, c), reps, 3)
        table.add(Row(f"op batchnorm fwd+bwd {h}x{w}x{c} x{count}", gs * 1e3, "pytorch bn",
                      ts * 1e3, items=B, note=f"per call; {count} in the step",
                      samples_gnj=sg, samples_peer=st))
        tot = totals.setdefault("batchnorm fwd+bwd", [0.0, 0.0])
        tot[0] += count * gs
        tot[1] += count * ts
    g, t = optimizer_ops()
    gs, ts, sg, st = alternate(g, t, reps, 5)
    table.add(Row("op sgd-momentum update (all params)", gs * 1e3, "torch.optim.SGD", ts * 1e3,
                  samples_gnj=sg, samples_peer=st))
    totals["optimizer update"] = [gs, ts]
    for kind, (gs, ts) in totals.items():
        table.add(Row(f"op total: {kind}{' (subset)' if args.quick else ''}", gs * 1e3,
                      "pytorch", ts * 1e3, items=B, note="sum over ResNet-20's shapes"))


__all__ = ["case_ops", "RESNET20_CONVS", "RESNET20_NORMS"]
