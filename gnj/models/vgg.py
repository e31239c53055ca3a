"""VGG-style non-residual CNNs (docs/references.md#vgg).

Each cfg entry is a 3×3 conv (padding 1; stride 2 for ``(width, 2)`` entries) → norm → act;
then a global mean pool and a Linear classifier (PyTorch default init). Convs: kaiming-normal
(fan_in, gain √2 whatever the activation), bias only with weight-reparametrised convs (``sws``,
``weight_norm``). Each conv-norm-act layer is a block.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax

from gnj.models import common
from gnj.models.layers import ConvNormActBlock, Layers
from gnj.models.resnet_cifar import conv_bias
from gnj.registry import MODELS

CFGS: dict[str, tuple] = {
    "cfg_10": (64, (64, 2), 128, (128, 2), 256, (256, 2), 512, (512, 2), 512, 512),
    "cfg_20": (64, 64, 64, (64, 2), 128, 128, 128, (128, 2), 256, 256, 256, (256, 2),
               256, 256, 256, (256, 2), 512, 512, 512, 512),
    "cfg_40": (*(64,) * 7, (64, 2), *(128,) * 7, (128, 2), *(256,) * 7, (256, 2),
               *(512,) * 7, (512, 2), *(512,) * 8),
}


def resolve_cfg(cfg: str | tuple) -> tuple:
    """A cfg name (``cfg_10``, ``cfg_20``, ``cfg_40``, ``uniform_<n>``) or an explicit tuple."""
    if isinstance(cfg, str):
        if cfg.startswith("uniform_"):
            return (64,) * int(cfg.split("_", 1)[1])
        if cfg not in CFGS:
            raise ValueError(f"vgg: unknown cfg {cfg!r}; valid: {', '.join(CFGS)}, uniform_<n>")
        return CFGS[cfg]
    return tuple(tuple(c) if isinstance(c, list) else c for c in cfg)


@MODELS.register("vgg")
class VGG(nn.Module):
    """Non-residual CNN from a cfg of widths, ``(width, 2)`` meaning a stride-2 conv."""

    cfg: str | tuple = "cfg_10"
    num_classes: int = 100
    norm: str = "batch"
    act: str = "relu"
    weight_init: str = "kaiming_normal(gain=1.4142135623730951)"
    conv: str = "plain"

    tiny: ClassVar[dict] = dict(cfg=(8, (8, 2), 8), input_shape=(8, 8, 3))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layers = resolve_cfg(self.cfg)
        strided = sum(1 for c in layers if isinstance(c, tuple))
        if min(x.shape[1:3]) < 2 ** strided:
            raise ValueError(f"vgg: input {x.shape[1:3]} is too small for {strided} stride-2 "
                             f"convs; need at least {2 ** strided}×{2 ** strided}")
        bundle = Layers.from_specs(self.norm, self.conv, self.act, self.weight_init,
                                   conv_bias=conv_bias("reparam_conv", self.norm, self.conv))
        for i, c in enumerate(layers):
            width, stride = (c if isinstance(c, tuple) else (c, 1))
            x = ConvNormActBlock(width, 3, stride, bundle, name=f"layer{i}")(x, train)
        x = common.global_avg_pool(x)
        return common.dense(self.num_classes, name="head")(x)
