"""DenseNet-BC for CIFAR-sized inputs: a 3×3 stem, dense blocks of pre-activation
bottlenecks joined by transitions, then norm-act, pooling and a linear classifier
(docs/references.md#densenet).

    stem:        conv3×3 → 2k channels (no norm after it: the bottlenecks are pre-activation)
    bottleneck:  y = conv3×3_k(act(norm(conv1×1_4k(act(norm(x)))))),  out = concat[y, x]
    transition:  out = conv1×1(act(norm(x))), floor(reduction·C) channels, stride 2, padding
                 ``transition_padding`` (with 1, spatial 32 → 17 → 10 and the padded border
                 comes out 0; with 0, 32 → 16 → 8)
    head:        act(norm(x)) → pool → Linear

``head_pool="global"`` averages the whole final map; ``"avg8"`` is PyTorch's ``avg_pool2d(8)``
on it: it averages the top-left 8×8 window only and needs a final map of 8–15 pixels per side.

Inits: every conv ``weight_init`` with the activation's gain, the classifier ``head_init``.
Conv bias only without a norm. Growth 12, blocks (8, 8, 8), reduction 0.5: channels
24 → 120 → 60 → 156 → 78 → 174. Variants override ``block_class`` (the bottleneck).
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.models import common
from gnj.models.layers import Layers
from gnj.models.resnet_cifar import SQRT2, conv_bias
from gnj.registry import MODELS

HEAD_POOLS = ("avg8", "global")


class Bottleneck(nn.Module):
    """Pre-activation bottleneck: norm-act-conv1×1(4k)-norm-act-conv3×3(k), concatenated with
    what the block carries on (its input)."""

    growth: int
    layers: Layers

    is_block: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        lay = self.layers
        activated = lay.act()(lay.norm(name="norm1")(x, train))
        y = lay.conv(4 * self.growth, 1, name="conv1")(activated)
        y = lay.act()(lay.norm(name="norm2")(y, train))
        y = lay.conv(self.growth, 3, name="conv2")(y)
        return jnp.concatenate([y, self.carried(x, activated)], axis=-1)

    def carried(self, x: jax.Array, activated: jax.Array) -> jax.Array:
        """The channels concatenated after the new ones: the block input ``x``."""
        return x


class Transition(nn.Module):
    """norm-act-conv1×1 with stride 2 and padding ``padding``."""

    features: int
    padding: int
    layers: Layers

    is_block: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        lay = self.layers
        y = lay.act()(lay.norm(name="norm")(x, train))
        return lay.conv(self.features, 1, 2, padding=self.padding, name="conv")(y)


def map_sizes(size: int, stages: int, padding: int) -> list[int]:
    """Spatial size after the stem and after each of ``stages − 1`` transitions."""
    sizes = [size]
    for _ in range(stages - 1):
        sizes.append((sizes[-1] + 2 * padding - 1) // 2 + 1)
    return sizes


@MODELS.register("densenet_bc")
class DenseNetBC(nn.Module):
    """DenseNet-BC; see the module docstring."""

    num_classes: int = 10
    growth: int = 12
    block_sizes: tuple[int, ...] = (8, 8, 8)
    reduction: float = 0.5
    transition_padding: int = 0
    head_pool: str = "global"
    norm: str = "batch"
    act: str = "relu"
    weight_init: str = "kaiming_normal"
    head_init: str = f"kaiming_normal(gain={SQRT2})"
    conv: str = "plain"

    tiny: ClassVar[dict] = dict(growth=2, block_sizes=(2, 2, 2), input_shape=(16, 16, 3))
    family: ClassVar[str] = "densenet_bc"

    def block_class(self) -> type[Bottleneck]:
        """The bottleneck of every dense block."""
        return Bottleneck

    def _check(self, x: jax.Array) -> None:
        blocks = tuple(self.block_sizes)
        if not blocks or any(not isinstance(b, int) or b < 1 for b in blocks):
            raise ValueError(f"{self.family}: block_sizes {self.block_sizes!r}; need a non-empty "
                             "tuple of positive ints, e.g. (8, 8, 8)")
        if self.growth < 1 or not 0 < self.reduction <= 1:
            raise ValueError(f"{self.family}: growth {self.growth}, reduction {self.reduction}; "
                             "need growth ≥ 1 and 0 < reduction ≤ 1")
        if self.transition_padding not in (0, 1):
            raise ValueError(f"{self.family}: transition_padding {self.transition_padding}; "
                             "valid: 0, 1")
        if self.head_pool not in HEAD_POOLS:
            raise ValueError(f"{self.family}: head_pool {self.head_pool!r}; valid: "
                             f"{', '.join(HEAD_POOLS)}")
        if x.ndim != 4:
            raise ValueError(f"{self.family}: input must be NHWC, got shape {x.shape}")
        final = [map_sizes(s, len(blocks), self.transition_padding)[-1] for s in x.shape[1:3]]
        if min(final) < 1 or (self.head_pool == "avg8" and not all(8 <= s <= 15 for s in final)):
            raise ValueError(
                f"{self.family}: input {tuple(x.shape[1:3])} gives a final map of {final}; "
                f"head_pool='avg8' (PyTorch avg_pool2d(8)) needs 8–15 per side, e.g. 32×32 "
                f"input with transition_padding=1 (→ 10) or 0 (→ 8); or use head_pool='global'")

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        self._check(x)
        layers = Layers.from_specs(self.norm, self.conv, self.act, self.weight_init,
                                   conv_bias=conv_bias("no_norm", self.norm, self.conv))
        x = layers.conv(2 * self.growth, 3, name="stem")(x)
        channels = 2 * self.growth
        block = self.block_class()
        for stage, n in enumerate(self.block_sizes):
            for i in range(n):
                x = block(self.growth, layers, name=f"dense{stage + 1}_{i}")(x, train)
                channels += self.growth
            if stage < len(self.block_sizes) - 1:
                channels = int(math.floor(channels * self.reduction))
                x = Transition(channels, self.transition_padding, layers,
                               name=f"trans{stage + 1}")(x, train)
        x = layers.act()(layers.norm(name="final_norm")(x, train))
        x = jnp.mean(x[:, :8, :8] if self.head_pool == "avg8" else x, axis=(1, 2))
        return common.dense(self.num_classes, kernel_init=common.make_init(self.head_init),
                            name="head")(x)
