"""MobileNet v1 and its dense twin (docs/references.md#mobilenet).

    stem conv3×3 3→32 stride 2 [+ norm] + act
    13 depthwise-separable blocks: dw conv3×3 (stride s, one group per channel) [+ norm] + act,
        pw conv1×1 [+ norm] + act, with (out, s) = (64,1) (128,2) (128,1) (256,2) (256,1) (512,2)
        (512,1)×5 (1024,2) (1024,1)
    global mean pool (the 7×7 map of a 224 input) → Linear(1024, C)

``dense=True`` replaces every dw + pw pair with a single dense 3×3 conv in → out
(stride s) [+ norm] + act. Every block gets its own activation instance (PReLU slopes are per
block). ``width`` multiplies every channel count.

Init: every conv ``weight_init`` with gain ``gain``, default **1.0** (so even ReLU nets get
std = 1/√fan_in); ``gain=None`` takes the activation's gain instead. The classifier is
kaiming_normal with the ReLU gain. Conv bias only without a norm. 224 input, 1000 classes, BN:
4,231,976 parameters.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax

from gnj.models import common
from gnj.models.layers import ConvNormActBlock, Layers
from gnj.models.resnet_cifar import SQRT2, conv_bias
from gnj.registry import MODELS

#: (output channels, stride) of the 13 blocks after the 32-channel stem.
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
STEM = 32
MIN_INPUT = 32  # five stride-2 convs


class DepthwiseSeparable(nn.Module):
    """dw conv3×3 (stride) [+ norm] + act, then pw conv1×1 [+ norm] + act."""

    features: int
    stride: int
    layers: Layers

    is_block: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = ConvNormActBlock(x.shape[-1], 3, self.stride, self.layers, groups=-1,
                             name="dw")(x, train)
        return ConvNormActBlock(self.features, 1, 1, self.layers, name="pw")(x, train)


@MODELS.register("mobilenet_v1")
class MobileNetV1(nn.Module):
    """MobileNet v1 (``dense=False``) or its dense-3×3 twin (``dense=True``)."""

    num_classes: int = 1000
    dense: bool = False
    width: float = 1.0
    norm: str = "batch"
    act: str = "relu"
    weight_init: str = "kaiming_normal"
    gain: float | None = 1.0
    head_init: str = f"kaiming_normal(gain={SQRT2})"
    conv: str = "plain"

    tiny: ClassVar[dict] = dict(width=0.125, input_shape=(32, 32, 3))

    def _ch(self, c: int) -> int:
        return max(1, int(c * self.width))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.width <= 0:
            raise ValueError(f"mobilenet_v1: width {self.width}; need a positive multiplier")
        if x.ndim != 4 or min(x.shape[1:3]) < MIN_INPUT:
            raise ValueError(f"mobilenet_v1: input shape {tuple(x.shape[1:])} is too small for "
                             f"five stride-2 stages; need NHWC with H, W ≥ {MIN_INPUT} "
                             "(224 for ImageNet)")
        layers = Layers.from_specs(self.norm, self.conv, self.act, self.weight_init,
                                   gain=self.gain,
                                   conv_bias=conv_bias("no_norm", self.norm, self.conv))
        x = ConvNormActBlock(self._ch(STEM), 3, 2, layers, name="stem")(x, train)
        for i, (c, s) in enumerate(BLOCKS):
            if self.dense:
                x = ConvNormActBlock(self._ch(c), 3, s, layers, name=f"block{i}")(x, train)
            else:
                x = DepthwiseSeparable(self._ch(c), s, layers, name=f"block{i}")(x, train)
        x = common.global_avg_pool(x)
        return common.dense(self.num_classes, kernel_init=common.make_init(self.head_init),
                            name="head")(x)
