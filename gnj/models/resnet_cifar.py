"""CIFAR ResNet-(6n+2): a 3×3 stem, three stages of n basic blocks (widths w, 2w, 4w; stride 2
at the first block of stages 2 and 3), global mean pool, linear classifier.

Options (docs/references.md#cifar-resnets):

- ``shortcut``, where a block changes the shape: ``"A"`` subsamples by the stride and appends
  zero channels (no parameters); ``"B"`` is a 1×1 conv (stride) + norm; ``"C"`` a 3×3 conv
  (stride) + norm.
- ``preact=True``: pre-activation blocks, norm-act-conv-norm-act-conv + shortcut, whose
  projection is norm → conv; the stem (conv-norm-act) and the head stay as in the
  post-activation net.
- ``skipinit=True``: a learnable scalar ``skip_gain`` (init 0) multiplies the residual branch.

Post-activation block: ``act(norm2(conv2(act(norm1(conv1(x))))) + shortcut(x))``.

Conv bias (``bias_rule``): ``"no_norm"``, a bias only when the norm is the identity;
``"reparam_conv"``, only for weight-reparametrised convs (``sws``, ``weight_norm``). Inits: the
stem ``stem_init`` (None: ``weight_init``) and the block convs ``weight_init``, both with the
gain of ``act``; projections ``shortcut_init`` (the gain of ``act`` for 3×3, 1 for 1×1); the
classifier ``head_init``.

Variants (``gnj/proj``) subclass :class:`ResNetCifar` and override its extension points:
``block_class`` (the block), ``make_layers`` (the layer bundle), ``stem`` and ``head``.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.models import common
from gnj.models.layers import Layers, is_no_norm
from gnj.nn.inits import Initializer
from gnj.registry import CONVS, MODELS, spec_name

SHORTCUTS = ("A", "B", "C")
SQRT2 = 1.4142135623730951
REPARAM_CONVS = ("sws", "weight_norm", "weight_norm_torch")  # canonical CONVS names


def blocks_per_stage(depth: int, model: str = "resnet_cifar") -> int:
    """n of a depth-(6n+2) CIFAR ResNet; a ValueError names the allowed depths otherwise."""
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"{model}: depth {depth} is not 6n+2 with n ≥ 1; allowed: 8, 14, 20, 26, 32, 44, 56, "
            "110, ...")
    return (depth - 2) // 6


def conv_bias(rule: str, norm: str, conv: str) -> bool:
    """Whether convs carry a bias: ``no_norm`` (only without a norm) or ``reparam_conv`` (only
    for weight-reparametrised convs)."""
    if rule == "no_norm":
        return is_no_norm(norm)
    if rule == "reparam_conv":
        return CONVS.canonical(spec_name(conv)) in REPARAM_CONVS
    raise ValueError(f"conv bias rule {rule!r}; valid: no_norm, reparam_conv")


class BasicBlock(nn.Module):
    """Post-activation basic block ``act(branch(x)·[skip_gain] + shortcut(x))``.

    ``shortcut_init``: kernel init of a projection shortcut (``"B"``, ``"C"``).
    """

    features: int
    stride: int
    layers: Layers
    shortcut: str = "A"
    shortcut_init: Initializer | None = None
    skipinit: bool = False

    is_block: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.layers.act()(self.gain(self.branch(x, train)) + self.skip(x, train))

    def branch(self, x: jax.Array, train: bool) -> jax.Array:
        """``norm2(conv2(act(norm1(conv1(x)))))``."""
        lay = self.layers
        y = lay.conv(self.features, 3, self.stride, name="conv1")(x)
        y = lay.act()(lay.norm(name="norm1")(y, train))
        return lay.norm(name="norm2")(lay.conv(self.features, 3, name="conv2")(y), train)

    def gain(self, y: jax.Array) -> jax.Array:
        """The branch times ``skip_gain`` (init 0) with ``skipinit``, else unchanged."""
        if not self.skipinit:
            return y
        return y * self.param("skip_gain", nn.initializers.zeros, (), jnp.float32)

    def skip(self, x: jax.Array, train: bool) -> jax.Array:
        """The shortcut: ``x`` where the shape is kept, else option A or a projection."""
        if self.stride == 1 and x.shape[-1] == self.features:
            return x
        if self.shortcut == "A":
            x = x[:, :: self.stride, :: self.stride, :]
            extra = self.features - x.shape[-1]
            return jnp.concatenate([x, jnp.zeros(x.shape[:-1] + (extra,), x.dtype)], axis=-1)
        return self.layers.norm(name="shortcut_norm")(self.projection()(x), train)

    def projection(self) -> nn.Module:
        """The shortcut's conv: 1×1 (``"B"``) or 3×3 (``"C"``) with the block's stride."""
        return self.layers.conv(self.features, 1 if self.shortcut == "B" else 3, self.stride,
                                kernel_init=self.shortcut_init, name="shortcut_conv")


class PreActBlock(BasicBlock):
    """Pre-activation block ``branch(x)·[skip_gain] + shortcut(x)``, projection norm → conv."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.gain(self.branch(x, train)) + self.skip(x, train)

    def branch(self, x: jax.Array, train: bool) -> jax.Array:
        """``conv2(act(norm2(conv1(act(norm1(x))))))``."""
        lay = self.layers
        y = lay.conv(self.features, 3, self.stride, name="conv1")(
            lay.act()(lay.norm(name="norm1")(x, train)))
        return lay.conv(self.features, 3, name="conv2")(lay.act()(lay.norm(name="norm2")(y, train)))

    def skip(self, x: jax.Array, train: bool) -> jax.Array:
        if self.stride == 1 and x.shape[-1] == self.features or self.shortcut == "A":
            return super().skip(x, train)
        return self.projection()(self.layers.norm(name="shortcut_norm")(x, train))


@MODELS.register("resnet_cifar")
class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for 32×32 (or smaller, ≥ 4×4) inputs; widths ``width·(1, 2, 4)``."""

    depth: int = 20
    num_classes: int = 10
    width: int = 16
    shortcut: str = "A"
    preact: bool = False
    skipinit: bool = False
    norm: str = "batch"
    act: str = "relu"
    weight_init: str = "kaiming_normal"
    stem_init: str | None = f"kaiming_normal(gain={SQRT2})"
    shortcut_init: str = "kaiming_normal"
    head_init: str = f"kaiming_normal(gain={SQRT2})"
    conv: str = "plain"

    tiny: ClassVar[dict] = dict(depth=8, width=4, input_shape=(8, 8, 3))
    family: ClassVar[str] = "resnet_cifar"
    bias_rule: ClassVar[str] = "no_norm"

    def check(self, x: jax.Array) -> int:
        """Blocks per stage, after checking the options and the input (ValueError)."""
        n = blocks_per_stage(self.depth, self.family)
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"{self.family}: shortcut {self.shortcut!r}; valid: "
                             f"{', '.join(SHORTCUTS)}")
        if x.ndim != 4 or min(x.shape[1:3]) < 4:
            raise ValueError(f"{self.family}: input shape {tuple(x.shape[1:])} is too small for "
                             "two stride-2 stages; need NHWC with H, W ≥ 4")
        return n

    def block_class(self) -> type[BasicBlock]:
        """The block of every stage."""
        return PreActBlock if self.preact else BasicBlock

    def make_layers(self) -> Layers:
        """The layer bundle of the blocks (and of the stem's conv)."""
        return Layers.from_specs(self.norm, self.conv, self.act, self.weight_init,
                                 conv_bias=conv_bias(self.bias_rule, self.norm, self.conv))

    def stem_conv(self, x: jax.Array, layers: Layers) -> jax.Array:
        """The 3×3 stem conv, init ``stem_init`` (or ``weight_init``) with the act's gain."""
        init = self.weight_init if self.stem_init is None else self.stem_init
        return layers.conv(self.width, 3, kernel_init=common.make_init(init, self.act),
                           name="stem")(x)

    def stem(self, x: jax.Array, layers: Layers, train: bool) -> jax.Array:
        """``act(norm(stem_conv(x)))``."""
        return layers.act()(layers.norm(name="stem_norm")(self.stem_conv(x, layers), train))

    def head(self, features: jax.Array) -> jax.Array:
        """Logits of the pooled features."""
        return common.dense(self.num_classes, kernel_init=common.make_init(self.head_init),
                            name="head")(features)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        n = self.check(x)
        layers = self.make_layers()
        shortcut_init = common.make_init(self.shortcut_init,
                                         "linear" if self.shortcut == "B" else self.act)
        block = self.block_class()
        x = self.stem(x, layers, train)
        for stage in range(3):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                x = block(self.width * 2**stage, stride, layers, self.shortcut, shortcut_init,
                          self.skipinit, name=f"stage{stage + 1}_block{i}")(x, train)
        return self.head(common.global_avg_pool(x))
