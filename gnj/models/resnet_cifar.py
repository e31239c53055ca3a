"""CIFAR ResNet-(6n+2): three stages of basic blocks (GNEDNN, Lubana, Online Norm).

One definition covers the references' CIFAR ResNets through options:

- ``shortcut="A"`` (GNEDNN_release ``cifar/models/resnet.py``, REFERENCE.md §1.5): subsample by
  the stride and concatenate zero channels; no parameters.
- ``shortcut="B"`` (online-normalization ``resnetD``, §5.4): 1×1 conv (stride) + norm.
- ``shortcut="C"`` (BeyondBatchNorm ``ResNet_cifar``, §2.3): 3×3 conv (stride) + norm.
- ``residual=False``: the same layout with no skips (GNEDNN's serial nets, ``gnj.models.serial``).
- ``preact=True``: pre-activation block (Lubana): norm-act-conv-norm-act-conv + shortcut, the
  projection (norm → 3×3 conv) only where the stride is not 1 ([as-written]: the reference's
  channel test is never true). Stem (conv-norm-act) and head (pool-linear) stay as in the
  post-activation net, as the reference's network class is shared by both block types. With no
  norm (``plain``, ``sws``, ``wn``), the reference's first in-place ReLU of the block overwrites
  the block input, so its shortcut reads ReLU(x) [as-written]; ``resnet56_lubana`` follows this
  (``shortcut_reads_inplace_relu=True``, docs/models_part1.md), ``False`` reads x.
- ``skipinit=True``: a learnable scalar ``skip_gain`` (init 0) multiplies the residual branch.
- ``bns=True`` with ``norm="none"``: GNEDNN's Fixup scalars (§1.5): per block
  out = act(conv2(act(conv1(x + b0) + b1) + b2)·scale + b3 + shortcut(x + b0)), network
  act(stem(x) + bias0) and bias2 before the classifier; no conv bias.
- ``fixup=True``: GNEDNN's CIFAR Fixup (§1.6, §1.9): both block convs get their init multiplied
  by L^(−p/(2m)) with L = (depth − 2)/m (``fixup_p``, ``fixup_m``; ResNet-56, m=2, p=2 → ×0.19245).
  There is no zero-init of the last conv and the classifier keeps its kaiming init, as written.
  (Equivalently ``weight_init="fixup(num_layers=27, m=2, variant='cifar', p=2)"``.)

Post-activation block: ``act(norm2(conv2(act(norm1(conv1(x))))) + shortcut(x))``.

Conv bias (``bias_rule``): GNEDNN's nets have a conv bias only when there is no norm (and not in
``bns`` mode); Lubana's only for weight-reparametrised convs (``sws``, ``weight_norm``).
Init markers as in GNEDNN: stem ``stem_init`` ('i': kaiming, ReLU gain), block convs
``weight_init`` with the gain of ``act`` ('b', 'be'), classifier ``head_init`` (kaiming, ReLU gain).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.models import common
from gnj.registry import MODELS, spec_name

SHORTCUTS = ("A", "B", "C")
SQRT2 = 1.4142135623730951
NO_NORM = ("none", "identity", "plain")
REPARAM_CONVS = ("sws", "scaled_ws", "weight_norm", "weight_norm_torch")
#: activations the Beyond-BN reference applies as an in-place ReLU (its WN activation's ReLU too)
INPLACE_RELU_ACTS = ("relu", "wn_scaled_relu")


def blocks_per_stage(depth: int, model: str = "resnet_cifar") -> int:
    """n of a depth-(6n+2) CIFAR ResNet; a ValueError names the allowed depths otherwise."""
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"{model}: depth {depth} is not 6n+2 with n ≥ 1; allowed: 8, 14, 20, 26, 32, 44, 56, "
            "110, ...")
    return (depth - 2) // 6


def conv_bias(rule: str, norm: str, conv: str) -> bool:
    """Whether convs carry a bias: ``no_norm`` (GNEDNN) or ``reparam_conv`` (Lubana)."""
    if rule == "no_norm":
        return spec_name(norm) in NO_NORM
    if rule == "reparam_conv":
        return spec_name(conv) in REPARAM_CONVS
    raise ValueError(f"conv bias rule {rule!r}; valid: no_norm, reparam_conv")


def fixup_factor(depth: int, p: float, m: float) -> float:
    """GNEDNN's CIFAR Fixup gain factor L^(−p/(2m)), L = (depth − 2)/m (REFERENCE.md §1.6)."""
    return ((depth - 2) / m) ** (-p / (2 * m))


def scaled(init: Callable, factor: float) -> Callable:
    """``init`` times ``factor`` (every gain-based init is linear in its gain)."""
    if factor == 1.0:
        return init
    return lambda key, shape, dtype=jnp.float32: factor * init(key, shape, dtype)


class BasicBlock(nn.Module):
    """Two 3×3 convs with norms and activations, plus (when ``residual``) a shortcut."""

    features: int
    stride: int
    shortcut: str
    norm: str
    act: str
    weight_init: str
    conv: str
    shortcut_init: str
    residual: bool = True
    preact: bool = False
    skipinit: bool = False
    bns: bool = False
    use_bias: bool = False
    gain_factor: float = 1.0
    shortcut_reads_inplace_relu: bool = False

    is_block: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        bias = self.use_bias and not self.bns
        kinit = scaled(common.make_init(self.weight_init, self.act), self.gain_factor)
        conv = lambda f, s, name: common.conv(self.conv, f, 3, s, use_bias=bias,
                                              kernel_init=kinit, name=name)
        act = lambda: common.make_act(self.act)
        if self.bns:  # GNEDNN Fixup scalars: no norm, no conv bias (REFERENCE.md §1.5)
            scalar = lambda name, v=0.0: self.param(name, nn.initializers.constant(v), (),
                                                    jnp.float32)
            xb = x + scalar("bias0")
            y = act()(conv(self.features, self.stride, "conv1")(xb) + scalar("bias1"))
            y = conv(self.features, 1, "conv2")(y + scalar("bias2")) * scalar("scale", 1.0)
            return act()(y + scalar("bias3") + self._shortcut(xb, train, bias))
        if self.preact:
            y = act()(common.make_norm(self.norm, "norm1")(x, train))
            y = conv(self.features, self.stride, "conv1")(y)
            y = act()(common.make_norm(self.norm, "norm2")(y, train))
            y = conv(self.features, 1, "conv2")(y)
            if (self.shortcut_reads_inplace_relu and spec_name(self.norm) in NO_NORM
                    and spec_name(self.act) in INPLACE_RELU_ACTS):
                x = nn.relu(x)  # the reference's in-place ReLU has overwritten the block input
            return self._gain(y) + self._shortcut(x, train, bias)
        y = conv(self.features, self.stride, "conv1")(x)
        y = act()(common.make_norm(self.norm, "norm1")(y, train))
        y = common.make_norm(self.norm, "norm2")(conv(self.features, 1, "conv2")(y), train)
        if not self.residual:
            return act()(y)
        return act()(self._gain(y) + self._shortcut(x, train, bias))

    def _gain(self, y: jax.Array) -> jax.Array:
        if not self.skipinit:
            return y
        return y * self.param("skip_gain", nn.initializers.zeros, (), jnp.float32)

    def _shortcut(self, x: jax.Array, train: bool, bias: bool) -> jax.Array:
        if self.stride == 1 and x.shape[-1] == self.features:
            return x
        if self.shortcut == "A":
            x = x[:, :: self.stride, :: self.stride, :]
            extra = self.features - x.shape[-1]
            return jnp.concatenate([x, jnp.zeros(x.shape[:-1] + (extra,), x.dtype)], axis=-1)
        k = 1 if self.shortcut == "B" else 3
        init = common.make_init(self.shortcut_init, "linear" if k == 1 else self.act)
        if self.preact:  # Lubana's preact projection: norm → conv
            s = common.make_norm(self.norm, "shortcut_norm")(x, train)
            return common.conv(self.conv, self.features, k, self.stride, use_bias=bias,
                               kernel_init=init, name="shortcut_conv")(s)
        s = common.conv(self.conv, self.features, k, self.stride, use_bias=bias,
                        kernel_init=init, name="shortcut_conv")(x)
        return common.make_norm(self.norm, "shortcut_norm")(s, train)


@MODELS.register("resnet_cifar")
class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for 32×32 (or smaller, ≥ 4×4) inputs; widths ``width·(1, 2, 4)``."""

    depth: int = 20
    num_classes: int = 10
    width: int = 16
    shortcut: str = "A"
    residual: bool = True
    preact: bool = False
    skipinit: bool = False
    bns: bool = False
    fixup: bool = False
    fixup_p: float = 1.0
    fixup_m: float = 2.0
    norm: str = "batch"
    act: str = "relu"
    weight_init: str = "kaiming_normal"
    stem_init: str | None = f"kaiming_normal(gain={SQRT2})"
    shortcut_init: str = "kaiming_normal"
    head_init: str = f"kaiming_normal(gain={SQRT2})"
    conv: str = "plain"
    shortcut_reads_inplace_relu: bool = False

    tiny: ClassVar[dict] = dict(depth=8, width=4, input_shape=(8, 8, 3))
    family: ClassVar[str] = "resnet_cifar"
    bias_rule: ClassVar[str] = "no_norm"

    def _check(self, x: jax.Array) -> int:
        n = blocks_per_stage(self.depth, self.family)
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"{self.family}: shortcut {self.shortcut!r}; valid: "
                             f"{', '.join(SHORTCUTS)}")
        if x.ndim != 4 or min(x.shape[1:3]) < 4:
            raise ValueError(f"{self.family}: input shape {tuple(x.shape[1:])} is too small for "
                             "two stride-2 stages; need NHWC with H, W ≥ 4")
        if self.bns and spec_name(self.norm) not in NO_NORM:
            raise ValueError(f"{self.family}: bns=True (Fixup scalars) needs norm='none', got "
                             f"{self.norm!r}")
        if self.fixup and self.fixup_m <= 0:
            raise ValueError(f"{self.family}: fixup_m must be > 0, got {self.fixup_m}")
        return n

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        n = self._check(x)
        bias = conv_bias(self.bias_rule, self.norm, self.conv) and not self.bns
        factor = fixup_factor(self.depth, self.fixup_p, self.fixup_m) if self.fixup else 1.0
        stem_init = self.weight_init if self.stem_init is None else self.stem_init
        x = common.conv(self.conv, self.width, 3, 1, use_bias=bias,
                        kernel_init=common.make_init(stem_init, self.act), name="stem")(x)
        if self.bns:
            x = common.make_act(self.act)(
                x + self.param("bias0", nn.initializers.zeros, (), jnp.float32))
        else:
            x = common.make_act(self.act)(common.make_norm(self.norm, "stem_norm")(x, train))
        for stage in range(3):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                x = BasicBlock(self.width * 2**stage, stride, self.shortcut, self.norm, self.act,
                               self.weight_init, self.conv, self.shortcut_init, self.residual,
                               self.preact, self.skipinit, self.bns, bias, factor,
                               self.shortcut_reads_inplace_relu,
                               name=f"stage{stage + 1}_block{i}")(x, train)
        x = common.global_avg_pool(x)
        if self.bns:
            x = x + self.param("bias2", nn.initializers.zeros, (), jnp.float32)
        return common.dense(self.num_classes, kernel_init=common.make_init(self.head_init),
                            name="head")(x)


@MODELS.register("resnet56_lubana")
class ResNet56Lubana(ResNetCifar):
    """Beyond-BatchNorm ResNet-56 (REFERENCE.md §2.3): widths 32/64/128 [as-written], 3×3
    projection shortcuts (conv + norm), post-activation, optional ``preact`` and ``skipinit``.

    Every conv is kaiming_normal(fan_in, ReLU gain √2) whatever the activation (the reference's
    ``get_convlayer``); the classifier keeps PyTorch's default; conv bias only for ``sws`` and
    ``weight_norm`` convs.
    """

    depth: int = 56
    width: int = 32
    num_classes: int = 100
    shortcut: str = "C"
    weight_init: str = f"kaiming_normal(gain={SQRT2})"
    stem_init: str | None = f"kaiming_normal(gain={SQRT2})"
    shortcut_init: str = f"kaiming_normal(gain={SQRT2})"
    head_init: str = "torch_default"
    shortcut_reads_inplace_relu: bool = True
    tiny: ClassVar[dict] = dict(depth=8, width=4, preact=True, skipinit=True,
                                input_shape=(8, 8, 3))
    family: ClassVar[str] = "resnet56_lubana"
    bias_rule: ClassVar[str] = "reparam_conv"
