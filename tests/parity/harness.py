"""Parity of gnj's models with PyTorch twins of the references, in float64.

For each case: build the twin, draw every parameter and running statistic at random, copy them into
the gnj model through ``gnj.interop.convert.from_torch``, then compare

- eval: the forward in eval mode (running statistics);
- train: the forward in train mode and the running statistics it leaves behind (with Online
  Normalization: its forward and backward streams after the step);
- input grad: ∂(Σ out·g)/∂x in train mode, for a fixed random cotangent g;
- param grads: the same loss's gradient for every parameter (the torch gradients go through the
  same converter, so each lands on its gnj parameter).

Errors are max|gnj − torch| / max|torch| per tensor, the worst tensor reported; the denominator is
floored at 1e-3 of the largest |torch| value of the column, since some gradients are zero in exact
arithmetic (the shift of a norm whose output only feeds batch-statistics norms) and hold rounding
noise only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from gnj.interop import convert
from gnj.models import build
from gnj.state import BACKWARD_STATE
from tests.parity import twins

TOL = 1e-10
COLUMNS = ("eval", "train", "input_grad", "param_grads")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str  # row label
    reference: str  # reference code base and module
    model: dict  # gnj model config
    twin: Callable[[], torch.nn.Module]
    input_shape: tuple[int, ...]  # NHWC, batch first
    num_classes: int = 3
    slow: bool = True  # the fast set (False) stays within the suite's time budget


def _cases() -> list[Case]:
    c = []
    add = c.append
    add(Case("wrn_constnet BN (d7 k1)", "BeyondSigProp model.py WideResNet",
             dict(name="wrn_constnet", depth=7, widen_factor=1, double_forward=True),
             lambda: twins.WideResNet(7, 3, 1, use_bn=True), (4, 32, 32, 3), slow=False))
    add(Case("wrn_constnet Fixup path (d7 k1)", "BeyondSigProp model.py WideResNet",
             dict(name="wrn_constnet", depth=7, widen_factor=1, norm="none",
                  double_forward=True),
             lambda: twins.WideResNet(7, 3, 1, use_bn=False), (4, 32, 32, 3)))
    add(Case("leakynet (d10 k1, lrelu 0.01)", "BeyondSigProp remodel.py LRNet",
             dict(name="leakynet", depth=10, widen_factor=1, init_string="h_hh_hh_hh"),
             lambda: twins.LRNet(10, 3, 1, 0.01), (4, 32, 32, 3)))
    for kind, name in (("regular", "dense_cnn"), ("depthwise", "dense_cnn_depthwise")):
        add(Case(f"{name} (D4, 2 cells, wm 0.25)", f"NN_Mass model_zoo {kind} dense CNN",
                 dict(name=name, cell_depth=4, wm=0.25, tc=(3, 10), num_cells=2),
                 lambda kind=kind: twins.DenseCNN(4, [4, 8], [3, 10], 3, kind == "depthwise",
                                                  4), (4, 8, 8, 3), slow=kind == "regular"))
    add(Case("dense_mlp (w4 d5 tc5)", "NN_Mass model_zoo Dense_MLP",
             dict(name="dense_mlp", width=4, depth=5, tc=5, topology_seed=3),
             lambda: twins.DenseMLP(4, 5, 5, 16, 3, 3), (4, 4, 4, 1), slow=False))
    add(Case("vgg BN_self (8,(8,2),16)", "BeyondBatchNorm models.py VGG",
             dict(name="vgg", cfg=(8, (8, 2), 16), norm="batch_lubana"),
             lambda: twins.LubanaVGG((8, (8, 2), 16), "bn", 3), (4, 8, 8, 3)))
    add(Case("vgg FRN + TLU (8,(8,2),16)", "BeyondBatchNorm models.py VGG",
             dict(name="vgg", cfg=(8, (8, 2), 16), norm="frn", act="identity"),
             lambda: twins.LubanaVGG((8, (8, 2), 16), "frn", 3), (4, 8, 8, 3), slow=False))
    add(Case("resnet56_lubana post-act BN_self (d8 w4)", "BeyondBatchNorm ResNet_cifar",
             dict(name="resnet56_lubana", depth=8, width=4, norm="batch_lubana"),
             lambda: twins.LubanaResNet(8, 4, "bn", 3, False, False), (4, 8, 8, 3)))
    add(Case("resnet56_lubana preact SkipInit BN_self (d8 w4)", "BeyondBatchNorm ResNet_cifar",
             dict(name="resnet56_lubana", depth=8, width=4, norm="batch_lubana", preact=True,
                  skipinit=True),
             lambda: twins.LubanaResNet(8, 4, "bn", 3, True, True), (4, 8, 8, 3)))
    add(Case("resnet56_lubana preact, no norm (d8 w4)", "BeyondBatchNorm ResNet_cifar",
             dict(name="resnet56_lubana", depth=8, width=4, norm="none", preact=True),
             lambda: twins.LubanaResNet(8, 4, "plain", 3, True, False), (4, 8, 8, 3)))
    add(Case("resnet_cifar BN, option A (d8 w4)", "GNEDNN cifar/models/resnet.py",
             dict(name="resnet_cifar", depth=8, width=4),
             lambda: twins.GneResNet(8, 4, 3), (4, 8, 8, 3)))
    for label, norm, act, acf in (
            ("BN, relu", "batch", "relu", lambda: torch.nn.ReLU(True)),
            ("no norm, relu", "none", "relu", lambda: torch.nn.ReLU(True)),
            ("no norm, leaky relu 0.3", "none", "leaky_relu(negative_slope=0.3)",
             lambda: torch.nn.LeakyReLU(0.3, inplace=True))):
        add(Case(f"densenet_cifar {label} (k2, 2-2-2)", "GNEDNN cifar/models/densenet.py",
                 dict(name="densenet_cifar", growth=2, block_sizes=(2, 2, 2), norm=norm,
                      act=act),
                 lambda norm=norm, acf=acf: twins.GneDenseNet(2, (2, 2, 2), norm != "none",
                                                              acf(), 3), (2, 32, 32, 3)))
    add(Case("mobilenet_v1 BN (width 1/8)", "GNEDNN imagenet/models/mobilenet.py",
             dict(name="mobilenet_v1", width=0.125),
             lambda: twins.GneMobileNet(0.125, True, 3), (4, 32, 32, 3)))
    add(Case("mobilenet_v1 dense, no norm (width 1/8)", "GNEDNN imagenet/models/mobilenet.py",
             dict(name="mobilenet_v1", width=0.125, dense=True, norm="none"),
             lambda: twins.GneMobileNet(0.125, False, 3, dense=True), (2, 32, 32, 3)))
    add(Case("fixup_resnet original, resnet18 arch", "GNEDNN imagenet/models/fixup_resnet.py",
             dict(name="fixup_resnet", arch="resnet18"),
             lambda: twins.FixupResNet18(3), (2, 32, 32, 3)))
    add(Case("serial_net BN (d8 w4)", "GNEDNN cifar/models/serial_net.py",
             dict(name="serial_net", depth=8, width=4),
             lambda: twins.GneResNet(8, 4, 3, residual=False), (4, 8, 8, 3)))
    add(Case("resnet_cifar + OnlineNorm, option B (d8 w4)",
             "Online Normalization experiments/resnet (cifar) + OnlineNorm2d",
             dict(name="resnet_cifar", depth=8, width=4, shortcut="B",
                  norm="online(decay_forward=0.9, decay_backward=0.8)"),
             lambda: twins.OnlineNormResNet(8, 4, 3, 0.9, 0.8), (4, 8, 8, 3)))
    add(Case("resnet18 (torchvision)", "torchvision resnet (NN_Mass, Online Norm)",
             dict(name="resnet18"), lambda: twins.TvResNet18(3), (4, 32, 32, 3)))
    # full depth (gnj's presets fix it); batch 8: the last stage is 1×1 at 32×32, and fewer
    # values per BatchNorm channel make the train column ill-conditioned (docs/parity.md)
    for arch, label, kw in (
            ("resnet50", "resnet50", {}),
            ("resnext50_32x4d", "resnext50_32x4d", dict(groups=32, width_per_group=4))):
        add(Case(f"{label} (torchvision)", "torchvision resnet bottleneck (NN_Mass, Online Norm)",
                 dict(name=arch), lambda kw=kw: twins.TvResNet18(
                     3, twins.TvBottleneck, (3, 4, 6, 3), **kw), (8, 32, 32, 3)))
    add(Case("fixup_resnet original, resnet50 arch", "GNEDNN imagenet/models/fixup_resnet.py",
             dict(name="fixup_resnet", arch="resnet50"),
             lambda: twins.FixupResNet18(3, twins.FixupBottleneck, (3, 4, 6, 3)), (2, 32, 32, 3)))
    for norm, label in (("batch", "BatchNorm1d"), ("layer", "LayerNorm1d"), ("none", "no norm")):
        add(Case(f"mlp {label} (16-8-6)", "Online Normalization experiments/mlp MLP_Model",
                 dict(name="mlp", hidden=(8, 6), norm=norm, use_bias=False),
                 lambda norm=norm: twins.OnMLP(16, (8, 6), 3, norm), (4, 4, 4, 1),
                 slow=False))
    setting = ((1, 8, 1, 1), (6, 8, 2, 2), (6, 16, 1, 2))
    add(Case("mobilenet_v2 (wm 0.25, 3 rows)", "torchvision mobilenetv2 (NN_Mass)",
             dict(name="mobilenet_v2", width_mult=0.25, inverted_residual_setting=setting,
                  dropout=0.0),
             lambda: twins.TvMobileNetV2(3, 0.25, setting), (4, 8, 8, 3)))
    return c


CASES = _cases()


def _err(got: Any, want: Any, floor: float = 0.0) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    if not want.size:
        return 0.0
    if not np.all(np.isfinite(got)):
        return float("inf")  # max() over errors would drop a NaN
    scale = max(float(np.max(np.abs(want))), floor)
    diff = float(np.max(np.abs(got - want)))
    return diff / scale if scale > 0 else diff


def _tree_err(got: Any, want: Any) -> float:
    a, b = jax.tree.leaves(got), jax.tree.leaves(want)
    if jax.tree.structure(got) != jax.tree.structure(want):
        return float("inf")
    floor = 1e-3 * max((float(np.max(np.abs(y))) for y in b if np.size(y)), default=0.0)
    return max((_err(x, y, floor) for x, y in zip(a, b)), default=0.0)


def _nhwc(t: torch.Tensor) -> np.ndarray:
    a = t.detach().numpy()
    return np.transpose(a, (0, 2, 3, 1)) if a.ndim == 4 else a


def _state(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """Parameters and buffers by their first (deduplicated) name."""
    out = {k: v.detach().numpy().copy() for k, v in module.named_parameters()}
    out.update({k: v.detach().numpy().copy() for k, v in module.named_buffers()})
    return out


def run_case(case: Case, seed: int = 0) -> dict[str, float]:
    """Max relative error per column (see the module docstring)."""
    torch.manual_seed(seed)
    twin = twins.randomize_(case.twin().double(), seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=case.input_shape)
    model = build(case.model, case.num_classes)
    with jax.enable_x64(True):
        init = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                 jnp.zeros(case.input_shape)))
        template = jax.tree.map(lambda s: np.zeros(s.shape, np.float64), init)
        variables = jax.tree.map(jnp.asarray, convert.from_torch(model, template, _state(twin)))
        xt = torch.tensor(np.transpose(x, (0, 3, 1, 2)) if x.ndim == 4 else x,
                          requires_grad=True)
        errors = {}
        twin.eval()
        with torch.no_grad():
            want = twin(xt).numpy()
        apply_eval = jax.jit(lambda v, xj: model.apply(v, xj, train=False))
        errors["eval"] = _err(apply_eval(variables, jnp.asarray(x)), want)

        twin.train()
        out_t = twin(xt)
        g = rng.normal(size=tuple(out_t.shape))
        (out_t * torch.tensor(g)).sum().backward()
        params = variables["params"]
        # Online Normalization's backward streams come back as the cotangent of their
        # collection (gnj's train step does the same)
        bwd = variables.get(BACKWARD_STATE, {})
        others = {k: v for k, v in variables.items() if k not in ("params", BACKWARD_STATE)}

        def loss(p, b, xj):
            out, new = model.apply({"params": p, BACKWARD_STATE: b, **others}, xj, train=True,
                                   mutable=list(others))
            return jnp.sum(out * g), (out, new)

        (_, (out_j, new_state)), (gp, gb, gx) = jax.jit(jax.value_and_grad(
            loss, (0, 1, 2), has_aux=True))(params, bwd, jnp.asarray(x))
        new_state = dict(new_state)
        if bwd:
            new_state[BACKWARD_STATE] = gb
        after = convert.from_torch(model, template, _state(twin))
        errors["train"] = max(_err(out_j, out_t.detach().numpy()),
                              _tree_err(new_state, {k: after[k] for k in new_state}))
        errors["input_grad"] = _err(gx, _nhwc(xt.grad))
        grads = {k: (p.grad.numpy() if p.grad is not None else np.zeros(p.shape))
                 for k, p in twin.named_parameters()}
        grads.update({k: v.detach().numpy() for k, v in twin.named_buffers()})
        errors["param_grads"] = _tree_err(gp, convert.from_torch(model, template,
                                                                 grads)["params"])
    return errors
