"""The CIFAR nets of the GNE reference: serial nets, Fixup-scalar ResNets, its DenseNet-BC.

- ``serial_net`` (docs/proj/gne.md#serial-nets): the CIFAR ResNet layout with no skip
  connections, stem conv3×3 3→16 [+ norm] + act → 3 stages (16, 32, 64 channels) of
  n = (depth − 2)/6 blocks conv-[norm]-act-conv-[norm]-act → mean pool → Linear(64, classes).
  Depth 32 has 31 convs + 1 Linear. Conv bias only when there is no norm. The reference's
  weight-normalised variant is ``norm="mean_only", conv="weight_norm_torch"``. Every conv,
  stem included, uses ``weight_init`` with the activation's gain; the classifier is
  kaiming_normal with the ReLU gain.
- ``fixup_resnet_cifar`` (docs/proj/gne.md#cifar-fixup): ``resnet_cifar`` with Fixup scalars
  (``scalars=True``, needs ``norm="none"``): per block
  out = act(conv2(act(conv1(x + b0) + b1) + b2)·scale + b3 + shortcut(x + b0)), the network
  act(stem(x) + bias0) and bias2 before the classifier, no conv bias. ``fixup=True`` multiplies
  the init of both block convs by L^(−p/(2m)), L = (depth − 2)/m (``fixup_p``, ``fixup_m``;
  ResNet-56, m = 2, p = 2 → ×0.19245), with no zero-init of the last conv (equivalently
  ``weight_init="fixup(num_layers=27, m=2, variant='cifar', p=2)"``).
- ``densenet_cifar`` (docs/proj/gne.md#densenet): the core DenseNet-BC with the reference's
  defaults (transition padding 1, ``avg8`` head) and, without a norm, its in-place activation:
  the reference's bottleneck applies an in-place activation module (its ``relu`` and
  ``leaky_relu``) to the block input, so the concatenation carries act(x), not x
  (``concat_after_inplace_act=True``; ``False`` concatenates x).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.models.densenet import Bottleneck, DenseNetBC
from gnj.models.layers import Layers, is_no_norm
from gnj.models.resnet_cifar import BasicBlock, ResNetCifar
from gnj.registry import ACTIVATIONS, MODELS, spec_name

#: activations the reference builds as in-place modules (nn.ReLU(True), nn.LeakyReLU(inplace))
INPLACE_ACTS = ("relu", "leaky_relu")


def scalar(module: nn.Module, name: str, value: float = 0.0) -> jax.Array:
    """A learnable float32 scalar parameter of ``module``, initialised to ``value``."""
    return module.param(name, nn.initializers.constant(value), (), jnp.float32)


def fixup_factor(depth: int, p: float, m: float) -> float:
    """The CIFAR Fixup gain factor L^(−p/(2m)), L = (depth − 2)/m."""
    return ((depth - 2) / m) ** (-p / (2 * m))


def scaled(init: Callable, factor: float) -> Callable:
    """``init`` times ``factor`` (every gain-based init is linear in its gain)."""
    if factor == 1.0:
        return init
    return lambda key, shape, dtype=jnp.float32: factor * init(key, shape, dtype)


class PlainBlock(BasicBlock):
    """The basic block without its shortcut: ``act(norm2(conv2(act(norm1(conv1(x))))))``."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.layers.act()(self.branch(x, train))


@MODELS.register("serial_net")
class SerialNet(ResNetCifar):
    """Plain (no-skip) CIFAR CNN of depth 6n+2; see the module docstring."""

    depth: int = 32
    stem_init: str | None = None  # None: the stem uses weight_init, like every plain conv

    tiny: ClassVar[dict] = dict(depth=8, width=4, input_shape=(8, 8, 3))
    family: ClassVar[str] = "serial_net"

    def block_class(self) -> type[BasicBlock]:
        if self.preact:
            raise ValueError("serial_net: preact=True is not defined for the net without skips")
        return PlainBlock


class FixupScalarBlock(BasicBlock):
    """act(conv2(act(conv1(x + b0) + b1) + b2)·scale + b3 + shortcut(x + b0)), no norm."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        lay = self.layers
        xb = x + scalar(self, "bias0")
        y = lay.act()(lay.conv(self.features, 3, self.stride, name="conv1")(xb)
                      + scalar(self, "bias1"))
        y = lay.conv(self.features, 3, name="conv2")(y + scalar(self, "bias2"))
        y = y * scalar(self, "scale", 1.0)
        return lay.act()(y + scalar(self, "bias3") + self.skip(xb, train))


@MODELS.register("fixup_resnet_cifar")
class FixupResNetCifar(ResNetCifar):
    """``resnet_cifar`` with Fixup scalars and/or the Fixup init factor; see the module doc."""

    norm: str = "none"
    scalars: bool = True
    fixup: bool = False
    fixup_p: float = 1.0
    fixup_m: float = 2.0

    # scalars=False: the registry-wide tests also build it with norms
    tiny: ClassVar[dict] = dict(depth=8, width=4, scalars=False, fixup=True,
                                input_shape=(8, 8, 3))
    family: ClassVar[str] = "fixup_resnet_cifar"

    def check(self, x: jax.Array) -> int:
        if self.scalars and not is_no_norm(self.norm):
            raise ValueError(f"{self.family}: scalars=True (Fixup scalars) needs norm='none', "
                             f"got {self.norm!r}")
        if self.fixup and self.fixup_m <= 0:
            raise ValueError(f"{self.family}: fixup_m must be > 0, got {self.fixup_m}")
        return super().check(x)

    def block_class(self) -> type[BasicBlock]:
        return FixupScalarBlock if self.scalars else super().block_class()

    def make_layers(self) -> Layers:
        layers = super().make_layers()
        if self.scalars:
            layers = layers.replace(conv_bias=False)
        if self.fixup:
            factor = fixup_factor(self.depth, self.fixup_p, self.fixup_m)
            layers = layers.replace(init=scaled(layers.init, factor))
        return layers

    def stem(self, x: jax.Array, layers: Layers, train: bool) -> jax.Array:
        if not self.scalars:
            return super().stem(x, layers, train)
        return layers.act()(self.stem_conv(x, layers) + scalar(self, "bias0"))

    def head(self, features: jax.Array) -> jax.Array:
        return super().head(features + scalar(self, "bias2") if self.scalars else features)


class InplaceActBottleneck(Bottleneck):
    """Bottleneck that passes on act(x) instead of x (the reference's in-place activation)."""

    def carried(self, x: jax.Array, activated: jax.Array) -> jax.Array:
        return activated


@MODELS.register("densenet_cifar")
class DenseNetCifar(DenseNetBC):
    """The reference's CIFAR DenseNet-BC; see the module docstring."""

    transition_padding: int = 1
    head_pool: str = "avg8"
    concat_after_inplace_act: bool = True

    tiny: ClassVar[dict] = dict(growth=2, block_sizes=(2, 2, 2), input_shape=(32, 32, 3))
    family: ClassVar[str] = "densenet_cifar"

    def block_class(self) -> type[Bottleneck]:
        if (self.concat_after_inplace_act and is_no_norm(self.norm)
                and ACTIVATIONS.canonical(spec_name(self.act)) in INPLACE_ACTS):
            return InplaceActBottleneck
        return Bottleneck
