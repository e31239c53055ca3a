"""GNEDNN's CIFAR DenseNet-BC (REFERENCE.md §1.5, ``cifar/models/densenet.py``).

Growth k = 12, three dense blocks of 8 pre-activation bottlenecks, reduction 0.5, stem conv3×3
3 → 2k = 24 channels (no norm after the stem: the bottlenecks are pre-activation):

    bottleneck:  y = conv3×3_k(act(norm(conv1×1_4k(act(norm(x)))))),  out = concat[y, x]
    transition:  out = conv1×1(act(norm(x))), floor(reduction·C) channels, stride 2, padding 1
    head:        act(norm(x)) → avg_pool(8) → Linear

Channels 24 → 120 → 60 → 156 → 78 → 174 for the default. The transition's 1×1 conv with stride 2
and **padding 1** is [as-written] (spatial 32 → 17 → 10; the padded border rows/columns come out
0); ``transition_padding=0`` gives the usual 32 → 16 → 8. The head is PyTorch's ``avg_pool2d(8)``
(``head_pool="avg8"``): on the as-written 10×10 map it averages the *top-left* 8×8 window only
[as-written]; it needs a final map of 8–15 pixels per side (larger maps would give several
windows, which the reference's Linear cannot take). ``head_pool="global"`` averages the whole map.

Without a norm, the reference's bottleneck applies its activation to the block input in place
when the activation is an in-place module (its ``relu`` and ``leaky_relu``), so the concatenation
carries act(x), not x [as-written]; for a leaky ReLU, each later bottleneck of the stage applies
it once more to those channels (for a ReLU nothing changes: every consumer applies it first).
``concat_after_inplace_act=True`` (default) follows this; ``False`` concatenates x
(docs/models_part1.md, "DenseNet in-place activation").

Init as GNEDNN's ``initialization()``: every conv ``weight_init`` with the activation's gain, the
classifier kaiming_normal with the ReLU gain. Conv bias only without norm (GNEDNN's convention
for its CIFAR nets; REFERENCE.md does not spell it out for the DenseNet).
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.models import common
from gnj.models.resnet_cifar import SQRT2, conv_bias
from gnj.registry import MODELS, spec_name

HEAD_POOLS = ("avg8", "global")
#: GNEDNN's activations that are in-place modules (nn.ReLU(True), nn.LeakyReLU(inplace=True))
INPLACE_ACTS = ("relu", "leaky_relu")
NO_NORM = ("none", "identity", "plain")


class Bottleneck(nn.Module):
    """Pre-activation bottleneck: norm-act-conv1×1(4k)-norm-act-conv3×3(k), concat with input."""

    growth: int
    norm: str
    act: str
    weight_init: str
    conv: str
    use_bias: bool
    concat_after_inplace_act: bool = True

    is_block: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        kinit = common.make_init(self.weight_init, self.act)
        y = common.make_act(self.act)(common.make_norm(self.norm, "norm1")(x, train))
        if (self.concat_after_inplace_act and spec_name(self.norm) in NO_NORM
                and spec_name(self.act) in INPLACE_ACTS):
            x = y  # the reference's in-place activation has overwritten the block input
        y = common.conv(self.conv, 4 * self.growth, 1, use_bias=self.use_bias,
                        kernel_init=kinit, name="conv1")(y)
        y = common.make_act(self.act)(common.make_norm(self.norm, "norm2")(y, train))
        y = common.conv(self.conv, self.growth, 3, use_bias=self.use_bias, kernel_init=kinit,
                        name="conv2")(y)
        return jnp.concatenate([y, x], axis=-1)


class Transition(nn.Module):
    """norm-act-conv1×1 with stride 2 and padding ``padding`` (1 as written, 0 to fix)."""

    features: int
    padding: int
    norm: str
    act: str
    weight_init: str
    conv: str
    use_bias: bool

    is_block: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = common.make_act(self.act)(common.make_norm(self.norm, "norm")(x, train))
        return common.conv(self.conv, self.features, 1, 2, padding=self.padding,
                           use_bias=self.use_bias,
                           kernel_init=common.make_init(self.weight_init, self.act),
                           name="conv")(y)


def map_sizes(size: int, stages: int, padding: int) -> list[int]:
    """Spatial size after the stem and after each of ``stages − 1`` transitions."""
    sizes = [size]
    for _ in range(stages - 1):
        sizes.append((sizes[-1] + 2 * padding - 1) // 2 + 1)
    return sizes


@MODELS.register("densenet_cifar")
class DenseNetCifar(nn.Module):
    """DenseNet-BC for CIFAR; see the module docstring."""

    num_classes: int = 10
    growth: int = 12
    block_sizes: tuple[int, ...] = (8, 8, 8)
    reduction: float = 0.5
    transition_padding: int = 1
    head_pool: str = "avg8"
    norm: str = "batch"
    act: str = "relu"
    weight_init: str = "kaiming_normal"
    head_init: str = f"kaiming_normal(gain={SQRT2})"
    conv: str = "plain"
    concat_after_inplace_act: bool = True

    tiny: ClassVar[dict] = dict(growth=2, block_sizes=(2, 2, 2), input_shape=(32, 32, 3))

    def _check(self, x: jax.Array) -> None:
        blocks = tuple(self.block_sizes)
        if not blocks or any(not isinstance(b, int) or b < 1 for b in blocks):
            raise ValueError(f"densenet_cifar: block_sizes {self.block_sizes!r}; need a non-empty "
                             "tuple of positive ints, e.g. (8, 8, 8)")
        if self.growth < 1 or not 0 < self.reduction <= 1:
            raise ValueError(f"densenet_cifar: growth {self.growth}, reduction {self.reduction}; "
                             "need growth ≥ 1 and 0 < reduction ≤ 1")
        if self.transition_padding not in (0, 1):
            raise ValueError(f"densenet_cifar: transition_padding {self.transition_padding}; "
                             "valid: 1 (as written), 0")
        if self.head_pool not in HEAD_POOLS:
            raise ValueError(f"densenet_cifar: head_pool {self.head_pool!r}; valid: "
                             f"{', '.join(HEAD_POOLS)}")
        if x.ndim != 4:
            raise ValueError(f"densenet_cifar: input must be NHWC, got shape {x.shape}")
        final = [map_sizes(s, len(blocks), self.transition_padding)[-1] for s in x.shape[1:3]]
        if min(final) < 1 or (self.head_pool == "avg8" and not all(8 <= s <= 15 for s in final)):
            raise ValueError(
                f"densenet_cifar: input {tuple(x.shape[1:3])} gives a final map of {final}; "
                f"head_pool='avg8' (PyTorch avg_pool2d(8)) needs 8–15 per side, e.g. 32×32 "
                f"input with transition_padding=1 (→ 10) or 0 (→ 8); or use head_pool='global'")

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        self._check(x)
        bias = conv_bias("no_norm", self.norm, self.conv)
        x = common.conv(self.conv, 2 * self.growth, 3, use_bias=bias,
                        kernel_init=common.make_init(self.weight_init, self.act), name="stem")(x)
        channels = 2 * self.growth
        for stage, n in enumerate(self.block_sizes):
            for i in range(n):
                x = Bottleneck(self.growth, self.norm, self.act, self.weight_init, self.conv, bias,
                               self.concat_after_inplace_act,
                               name=f"dense{stage + 1}_{i}")(x, train)
                channels += self.growth
            if stage < len(self.block_sizes) - 1:
                channels = int(math.floor(channels * self.reduction))
                x = Transition(channels, self.transition_padding, self.norm, self.act,
                               self.weight_init, self.conv, bias,
                               name=f"trans{stage + 1}")(x, train)
        x = common.make_act(self.act)(common.make_norm(self.norm, "final_norm")(x, train))
        x = jnp.mean(x[:, :8, :8] if self.head_pool == "avg8" else x, axis=(1, 2))
        return common.dense(self.num_classes, kernel_init=common.make_init(self.head_init),
                            name="head")(x)
