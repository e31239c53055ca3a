"""torchvision-shaped ImageNet ResNets, ResNeXts and Wide ResNets, with any norm
(docs/references.md#torchvision-models).

torchvision's ``resnet.py`` layout: stem 7×7/2 conv → norm → act → 3×3/2 max-pool (or a 3×3/1
stem without pool when ``cifar_stem``), four stages of basic or bottleneck blocks (stride on the
3×3 conv, torchvision v1.5), downsample 1×1 conv + norm, global average pool, Linear. Convs are
kaiming-normal with fan_out and the ReLU gain (torchvision's init); norms start at γ=1, β=0;
``zero_init_residual`` zeroes the last norm's γ of each block (a ValueError for norms without a
scale, e.g. ``none``). Every norm of the net, downsample norms included, is ``norm``; ``act``
(default ReLU) replaces every ReLU. The classifier keeps PyTorch's default Linear init. Each
block is a block for analysis (``is_block``).

Presets: ``resnet18`` … ``resnet152``, ``resnext50_32x4d``, ``resnext101_32x8d``,
``wide_resnet50_2``, ``wide_resnet101_2`` (each = ``resnet_imagenet(arch=...)``).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.models import common
from gnj.models.layers import Layers
from gnj.nn import activations
from gnj.registry import MODELS, NORMS, spec_name

SQRT2 = 1.4142135623730951
# arch: (block, layers, groups, width_per_group)
ARCHS: dict[str, tuple[str, tuple[int, ...], int, int]] = {
    "resnet18": ("basic", (2, 2, 2, 2), 1, 64),
    "resnet34": ("basic", (3, 4, 6, 3), 1, 64),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 1, 64),
    "resnet101": ("bottleneck", (3, 4, 23, 3), 1, 64),
    "resnet152": ("bottleneck", (3, 8, 36, 3), 1, 64),
    "resnext50_32x4d": ("bottleneck", (3, 4, 6, 3), 32, 4),
    "resnext101_32x8d": ("bottleneck", (3, 4, 23, 3), 32, 8),
    "wide_resnet50_2": ("bottleneck", (3, 4, 6, 3), 1, 128),
    "wide_resnet101_2": ("bottleneck", (3, 4, 23, 3), 1, 128),
}


class Block(nn.Module):
    """torchvision BasicBlock (expansion 1) or Bottleneck (expansion 4, grouped 3×3)."""

    planes: int
    stride: int
    kind: str
    groups: int
    base_width: int
    layers: Layers
    zero_init_residual: bool

    is_block: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        lay = self.layers
        last = _scale(lay.norm_spec, 0.0 if self.zero_init_residual else 1.0)
        if self.kind == "basic":
            out_ch = self.planes
            y = lay.act()(lay.norm(name="bn1")(
                lay.conv(self.planes, 3, self.stride, name="conv1")(x), train))
            y = lay.norm(name="bn2", **last)(lay.conv(self.planes, 3, name="conv2")(y), train)
        else:
            width = int(self.planes * (self.base_width / 64.0)) * self.groups
            out_ch = self.planes * 4
            y = lay.act()(lay.norm(name="bn1")(lay.conv(width, 1, name="conv1")(x), train))
            y = lay.act()(lay.norm(name="bn2")(
                lay.conv(width, 3, self.stride, groups=self.groups, name="conv2")(y), train))
            y = lay.norm(name="bn3", **last)(lay.conv(out_ch, 1, name="conv3")(y), train)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != out_ch:
            shortcut = lay.norm(name="downsample_bn")(
                lay.conv(out_ch, 1, self.stride, name="downsample_conv")(x), train)
        return lay.act()(y + shortcut)


def _scale(norm: str, value: float) -> dict:
    """``scale_init`` for the block's last norm when zeroing it (only norms that take it)."""
    if value == 1.0:
        return {}
    fields = getattr(NORMS.get(spec_name(norm)), "__dataclass_fields__", {})
    if "scale_init" not in fields:
        takes = sorted(n for n in NORMS.names()
                       if "scale_init" in getattr(NORMS.get(n), "__dataclass_fields__", {}))
        raise ValueError(f"resnet: zero_init_residual needs a norm with a learnable scale "
                         f"(scale_init); norm {norm!r} has none. Norms that have one: "
                         f"{', '.join(takes)}")
    return {"scale_init": value}


@MODELS.register("resnet_imagenet")
class ResNet(nn.Module):
    """torchvision ResNet family member ``arch`` (see ``ARCHS``)."""

    arch: str = "resnet50"
    num_classes: int = 1000
    norm: str = "batch"
    conv: str = "plain"
    weight_init: str = f"kaiming_normal(mode='fan_out', gain={SQRT2})"
    zero_init_residual: bool = False
    cifar_stem: bool = False
    act: str = "relu"

    tiny: ClassVar[dict] = dict(arch="resnet18", cifar_stem=True, input_shape=(16, 16, 3))

    def spec(self) -> tuple[str, tuple[int, ...], int, int]:
        if self.arch not in ARCHS:
            raise ValueError(f"resnet: unknown arch {self.arch!r}; valid: {', '.join(ARCHS)}")
        return ARCHS[self.arch]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        kind, layers, groups, base_width = self.spec()
        reduction = 8 if self.cifar_stem else 32
        if min(x.shape[1:3]) < reduction:
            raise ValueError(f"resnet ({self.arch}): input {x.shape[1:3]} is too small for its "
                             f"stride-2 stages; need at least {reduction}×{reduction}")
        # every conv's init takes the ReLU gain, whatever the activation
        lay = Layers.from_specs(self.norm, self.conv, self.act, self.weight_init,
                                gain=activations.gain("relu"))
        kernel, stride = (3, 1) if self.cifar_stem else (7, 2)
        x = lay.act()(lay.norm(name="bn1")(lay.conv(64, kernel, stride, name="conv1")(x), train))
        if not self.cifar_stem:
            x = nn.max_pool(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf),
                            (3, 3), (2, 2))
        for stage, blocks in enumerate(layers):
            planes = 64 * 2**stage
            for i in range(blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                x = Block(planes, stride, kind, groups, base_width, lay,
                          self.zero_init_residual, name=f"layer{stage + 1}_{i}")(x, train)
        x = common.global_avg_pool(x)
        return common.dense(self.num_classes, name="fc")(x)


def _register_arch(name: str) -> None:
    class Arch(ResNet):
        arch: str = name

    Arch.__name__ = Arch.__qualname__ = "".join(p.capitalize() for p in name.split("_"))
    MODELS.register(name)(Arch)


for _name in ARCHS:
    _register_arch(_name)
