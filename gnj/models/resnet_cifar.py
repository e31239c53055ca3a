"""CIFAR ResNet-(6n+2): three stages of basic blocks (He et al. 2016, §4.2).

One definition covers the references' CIFAR ResNets through options:

- ``shortcut="A"`` (GNEDNN_release ``cifar/models/resnet.py``, REFERENCE.md §1.5): subsample by
  the stride and concatenate zero channels; no parameters.
- ``shortcut="B"`` (online-normalization ``resnetD``, REFERENCE.md §5.4): 1×1 conv (stride) + norm.

Block (post-activation): ``act(norm2(conv2(act(norm1(conv1(x))))) + shortcut(x))``.
Convs carry a bias only when the norm is ``none`` (as in the references). Init markers as in
GNEDNN: stem conv ``stem_init`` (Chen: kaiming with the ReLU gain), block convs ``weight_init`` with the
gain of ``act``, the classifier ``head_init``.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.models import common
from gnj.registry import MODELS, spec_name


def blocks_per_stage(depth: int, model: str = "resnet_cifar") -> int:
    """n of a depth-(6n+2) CIFAR ResNet; a ValueError names the allowed depths otherwise."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"{model}: depth {depth} is not 6n+2 with n ≥ 1; allowed: 8, 14, 20, 26, 32, 44, 56, "
            "110, ...")
    return (depth - 2) // 6


class BasicBlock(nn.Module):
    """conv-norm-act-conv-norm, plus shortcut, then act."""

    features: int
    stride: int
    shortcut: str
    norm: str
    act: str
    weight_init: str
    conv: str
    shortcut_init: str

    is_block: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        bias = spec_name(self.norm) in ("none", "identity", "plain")
        kinit = common.make_init(self.weight_init, self.act)
        y = common.conv(self.conv, self.features, 3, self.stride, use_bias=bias,
                        kernel_init=kinit, name="conv1")(x)
        y = common.make_norm(self.norm, "norm1")(y, train)
        y = common.make_act(self.act)(y)
        y = common.conv(self.conv, self.features, 3, 1, use_bias=bias, kernel_init=kinit,
                        name="conv2")(y)
        y = common.make_norm(self.norm, "norm2")(y, train)
        return common.make_act(self.act)(y + self._shortcut(x, train, bias))

    def _shortcut(self, x: jax.Array, train: bool, bias: bool) -> jax.Array:
        if self.stride == 1 and x.shape[-1] == self.features:
            return x
        if self.shortcut == "A":
            x = x[:, :: self.stride, :: self.stride, :]
            extra = self.features - x.shape[-1]
            return jnp.concatenate([x, jnp.zeros(x.shape[:-1] + (extra,), x.dtype)], axis=-1)
        if self.shortcut == "B":
            s = common.conv(self.conv, self.features, 1, self.stride, use_bias=bias,
                            kernel_init=common.make_init(self.shortcut_init, "linear"),
                            name="shortcut_conv")(x)
            return common.make_norm(self.norm, "shortcut_norm")(s, train)
        raise ValueError(f"resnet_cifar: shortcut {self.shortcut!r}; valid: 'A', 'B'")


@MODELS.register("resnet_cifar")
class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for 32×32 (or smaller) inputs; widths ``width·(1, 2, 4)``."""

    depth: int = 20
    num_classes: int = 10
    width: int = 16
    shortcut: str = "A"
    norm: str = "batch"
    act: str = "relu"
    weight_init: str = "kaiming_normal"
    stem_init: str = "kaiming_normal(gain=1.4142135623730951)"
    shortcut_init: str = "kaiming_normal"
    head_init: str = "kaiming_normal(gain=1.4142135623730951)"
    conv: str = "plain"

    def setup(self) -> None:
        if self.shortcut not in ("A", "B"):
            raise ValueError(f"resnet_cifar: shortcut {self.shortcut!r}; valid: 'A', 'B'")
        blocks_per_stage(self.depth)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        n = blocks_per_stage(self.depth)
        bias = spec_name(self.norm) in ("none", "identity", "plain")
        x = common.conv(self.conv, self.width, 3, 1, use_bias=bias,
                        kernel_init=common.make_init(self.stem_init, self.act), name="stem")(x)
        x = common.make_norm(self.norm, "stem_norm")(x, train)
        x = common.make_act(self.act)(x)
        for stage in range(3):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                x = BasicBlock(self.width * 2**stage, stride, self.shortcut, self.norm, self.act,
                               self.weight_init, self.conv, self.shortcut_init,
                               name=f"stage{stage + 1}_block{i}")(x, train)
        x = common.global_avg_pool(x)
        return common.dense(self.num_classes, kernel_init=common.make_init(self.head_init),
                            name="head")(x)
