"""CIFAR ResNet-(6n+2) and its plain (no-skip) twin: three stages of basic blocks.

One definition covers the references' CIFAR ResNets and serial nets through options:

- ``shortcut="A"`` (GNEDNN_release ``cifar/models/resnet.py``, REFERENCE.md §1.5): subsample by
  the stride and concatenate zero channels; no parameters.
- ``shortcut="B"`` (online-normalization ``resnetD``, §5.4): 1×1 conv (stride) + norm.
- ``shortcut="C"`` (BeyondBatchNorm ``ResNet_cifar``, §2.3): 3×3 conv (stride) + norm.
- ``residual=False``: GNEDNN's SerialNet / SerialNetNorm (§1.5), the same layout with no skips.
- ``preact=True``: pre-activation block (Lubana): norm-act-conv-norm-act-conv + shortcut, the
  projection (norm → 3×3 conv) only where the stride is not 1 ([as-written]).
- ``skipinit=True``: a learnable scalar ``skip_gain`` (init 0) multiplies the residual branch.

Post-activation block: ``act(norm2(conv2(act(norm1(conv1(x))))) + shortcut(x))``. Convs carry a
bias only when the norm is ``none`` (or the conv is weight-normalised), as in the references.
Init markers as in GNEDNN: stem ``stem_init`` (kaiming, ReLU gain), block convs ``weight_init``
with the gain of ``act``, classifier ``head_init``.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.models import common
from gnj.registry import MODELS, spec_name

SHORTCUTS = ("A", "B", "C")
SQRT2 = 1.4142135623730951


def blocks_per_stage(depth: int, model: str = "resnet_cifar") -> int:
    """n of a depth-(6n+2) CIFAR ResNet; a ValueError names the allowed depths otherwise."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"{model}: depth {depth} is not 6n+2 with n ≥ 1; allowed: 8, 14, 20, 26, 32, 44, 56, "
            "110, ...")
    return (depth - 2) // 6


def _conv_bias(norm: str, conv: str) -> bool:
    return spec_name(norm) in ("none", "identity", "plain") or spec_name(conv) in (
        "sws", "scaled_ws", "weight_norm", "weight_norm_torch")


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

    is_block: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        bias = _conv_bias(self.norm, self.conv)
        kinit = common.make_init(self.weight_init, self.act)
        conv = lambda f, s, name: common.conv(self.conv, f, 3, s, use_bias=bias,
                                              kernel_init=kinit, name=name)
        if self.preact:
            y = common.make_act(self.act)(common.make_norm(self.norm, "norm1")(x, train))
            y = conv(self.features, self.stride, "conv1")(y)
            y = common.make_act(self.act)(common.make_norm(self.norm, "norm2")(y, train))
            y = conv(self.features, 1, "conv2")(y)
            return self._gain(y) + self._shortcut(x, train, bias)
        y = conv(self.features, self.stride, "conv1")(x)
        y = common.make_act(self.act)(common.make_norm(self.norm, "norm1")(y, train))
        y = common.make_norm(self.norm, "norm2")(conv(self.features, 1, "conv2")(y), train)
        if not self.residual:
            return common.make_act(self.act)(y)
        return common.make_act(self.act)(self._gain(y) + self._shortcut(x, train, bias))

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
    """ResNet-(6n+2) for 32×32 (or smaller) inputs; widths ``width·(1, 2, 4)``."""

    depth: int = 20
    num_classes: int = 10
    width: int = 16
    shortcut: str = "A"
    residual: bool = True
    preact: bool = False
    skipinit: bool = False
    norm: str = "batch"
    act: str = "relu"
    weight_init: str = "kaiming_normal"
    stem_init: str = f"kaiming_normal(gain={SQRT2})"
    shortcut_init: str = "kaiming_normal"
    head_init: str = f"kaiming_normal(gain={SQRT2})"
    conv: str = "plain"

    tiny: ClassVar[dict] = dict(depth=8, width=4, input_shape=(8, 8, 3))
    family: ClassVar[str] = "resnet_cifar"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        n = blocks_per_stage(self.depth, self.family)
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"{self.family}: shortcut {self.shortcut!r}; valid: "
                             f"{', '.join(SHORTCUTS)}")
        if min(x.shape[1:3]) < 4:
            raise ValueError(f"{self.family}: input {x.shape[1:3]} is too small for two "
                             "stride-2 stages; need at least 4×4")
        bias = _conv_bias(self.norm, self.conv)
        x = common.conv(self.conv, self.width, 3, 1, use_bias=bias,
                        kernel_init=common.make_init(self.stem_init, self.act), name="stem")(x)
        if not self.preact:
            x = common.make_act(self.act)(common.make_norm(self.norm, "stem_norm")(x, train))
        for stage in range(3):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                x = BasicBlock(self.width * 2**stage, stride, self.shortcut, self.norm, self.act,
                               self.weight_init, self.conv, self.shortcut_init, self.residual,
                               self.preact, self.skipinit,
                               name=f"stage{stage + 1}_block{i}")(x, train)
        if self.preact:
            x = common.make_act(self.act)(common.make_norm(self.norm, "final_norm")(x, train))
        x = common.global_avg_pool(x)
        return common.dense(self.num_classes, kernel_init=common.make_init(self.head_init),
                            name="head")(x)


@MODELS.register("serial_net")
class SerialNet(ResNetCifar):
    """GNEDNN SerialNet / SerialNetNorm: the CIFAR ResNet layout with no skip connections.

    Every conv (stem included) and the classifier use ``weight_init`` with the activation's
    gain, as GNEDNN's ``initialization()`` does for plain ``nn.Conv2d`` / ``nn.Linear``.
    """

    depth: int = 32
    residual: bool = False
    stem_init: str = "kaiming_normal"
    tiny: ClassVar[dict] = dict(depth=8, width=4, input_shape=(8, 8, 3))
    family: ClassVar[str] = "serial_net"


@MODELS.register("resnet56_lubana")
class ResNet56Lubana(ResNetCifar):
    """Beyond-BatchNorm ResNet-56: widths 32/64/128, 3×3 projection shortcuts, kaiming convs,
    PyTorch-default classifier; ``preact`` and ``skipinit`` options (REFERENCE.md §2.3)."""

    depth: int = 56
    width: int = 32
    num_classes: int = 100
    shortcut: str = "C"
    stem_init: str = "kaiming_normal"
    shortcut_init: str = "kaiming_normal"
    head_init: str = "torch_default"
    tiny: ClassVar[dict] = dict(depth=8, width=4, preact=True, skipinit=True,
                                input_shape=(8, 8, 3))
    family: ClassVar[str] = "resnet56_lubana"
