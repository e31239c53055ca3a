"""Fixup ResNets for ImageNet, original and the GNE variant (docs/proj/gne.md#fixup-resnets).

No normalization; scalar biases before every conv and activation and a scalar multiplier per
block. ``variant="original"`` (Zhang et al. 2019, as in the GNE reference code): branch convs
N(0, √(2/fan_out))·L^(−1/(2m−2)) (L blocks; m = 3 convs per bottleneck → L^(−1/4), m = 2 per
basic block → L^(−1/2)), the last branch conv 0, downsample N(0, √(2/fan_out)), classifier 0.
``variant="ours"`` (the GNE paper's variant): fan_in instead of fan_out, exponent
−1/3 (bottleneck) or −1/1.5 (basic), downsample N(0, √(1/fan_in)). Both output exactly zero
logits at init.

Bottleneck forward: out = conv1(x + b1a); out = relu(out + b1b); out = conv2(out + b2a);
out = relu(out + b2b); out = conv3(out + b3a)·scale + b3b; out = relu(out + shortcut), with the
shortcut downsample(x + b1a) where the shape changes.
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.models import common
from gnj.models.layers import Layers
from gnj.models.resnet import ARCHS
from gnj.nn import inits
from gnj.registry import MODELS

VARIANTS = ("original", "ours")


def _scalar(module: nn.Module, name: str, value: float = 0.0) -> jax.Array:
    return module.param(name, nn.initializers.constant(value), (), jnp.float32)


class FixupBlock(nn.Module):
    planes: int
    stride: int
    kind: str
    num_blocks: int
    variant: str
    layers: Layers

    is_block: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        m = 3 if self.kind == "bottleneck" else 2
        branch = inits.fixup(num_layers=self.num_blocks, m=m, variant=self.variant)
        conv = lambda f, k, s, init, name: self.layers.conv(f, k, s, kernel_init=init, name=name)
        out_ch = self.planes * (4 if self.kind == "bottleneck" else 1)
        xb = x + _scalar(self, "bias1a")
        if self.kind == "bottleneck":
            y = nn.relu(conv(self.planes, 1, 1, branch, "conv1")(xb) + _scalar(self, "bias1b"))
            y = conv(self.planes, 3, self.stride, branch, "conv2")(y + _scalar(self, "bias2a"))
            y = nn.relu(y + _scalar(self, "bias2b"))
            y = conv(out_ch, 1, 1, inits.zeros(), "conv3")(y + _scalar(self, "bias3a"))
            y = y * _scalar(self, "scale", 1.0) + _scalar(self, "bias3b")
        else:
            y = conv(self.planes, 3, self.stride, branch, "conv1")(xb)
            y = nn.relu(y + _scalar(self, "bias1b"))
            y = conv(self.planes, 3, 1, inits.zeros(), "conv2")(y + _scalar(self, "bias2a"))
            y = y * _scalar(self, "scale", 1.0) + _scalar(self, "bias2b")
        shortcut = x
        if self.stride != 1 or x.shape[-1] != out_ch:
            down = (inits.kaiming_normal(math.sqrt(2.0), mode="fan_out")
                    if self.variant == "original" else inits.kaiming_normal(1.0, mode="fan_in"))
            shortcut = conv(out_ch, 1, self.stride, down, "downsample")(xb)
        return nn.relu(y + shortcut)


@MODELS.register("fixup_resnet")
class FixupResNet(nn.Module):
    """torchvision-shaped Fixup ResNet (``arch`` from ``gnj.models.resnet.ARCHS``; also
    registered as ``fixup_resnet50``, the default arch). ``cifar_stem`` swaps the 7×7/2 stem and
    max-pool for a 3×3/1 conv (small inputs; not in the reference)."""

    arch: str = "resnet50"
    variant: str = "original"
    num_classes: int = 1000
    cifar_stem: bool = False

    tiny: ClassVar[dict] = dict(arch="resnet18", cifar_stem=True, input_shape=(8, 8, 3))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.arch not in ARCHS or ARCHS[self.arch][2] != 1:
            valid = [a for a, s in ARCHS.items() if s[2] == 1 and s[3] == 64]
            raise ValueError(f"fixup_resnet: arch {self.arch!r}; valid: {', '.join(valid)}")
        if self.variant not in VARIANTS:
            raise ValueError(f"fixup_resnet: variant {self.variant!r}; valid: original, ours")
        kind, layers, _, _ = ARCHS[self.arch]
        strides = len(layers) - 1 + (0 if self.cifar_stem else 2)
        if x.ndim != 4 or min(x.shape[1:3]) < 2**strides:
            raise ValueError(f"fixup_resnet: input shape {tuple(x.shape[1:])} is too small for "
                             f"{strides} stride-2 stages; need NHWC with H, W ≥ {2**strides}")
        lay = Layers.from_specs("none", "plain", "relu",
                                inits.kaiming_normal(math.sqrt(2.0), mode="fan_out"))
        kernel, stride = (3, 1) if self.cifar_stem else (7, 2)
        x = nn.relu(lay.conv(64, kernel, stride, name="conv1")(x) + _scalar(self, "bias1"))
        if not self.cifar_stem:
            x = nn.max_pool(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf),
                            (3, 3), (2, 2))
        total = sum(layers)
        for stage, blocks in enumerate(layers):
            for i in range(blocks):
                x = FixupBlock(64 * 2**stage, 2 if stage > 0 and i == 0 else 1, kind, total,
                               self.variant, lay, name=f"layer{stage + 1}_{i}")(x, train)
        x = common.global_avg_pool(x) + _scalar(self, "bias2")
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="fc")(x)


MODELS.alias({"fixup_resnet50": "fixup_resnet"})
