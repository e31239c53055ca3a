"""LeakyNet (Blumenfeld, Gilboa, Soudry, ICML 2020; BeyondSigProp ``remodel.py::LRNet``,
docs/proj/constnet.md#leakynet): ConstNet's channel plan with **no skips**.

    stem conv3×3 3→16 → 3n blocks (channels 16k, 32k, 64k; stride 2 at the first block of stages 2
    and 3), block i: act(conv3×3(x + b₀)) [+ dropout] [+ norm when i is odd]
    → act → global mean → fc

act is a leaky ReLU of slope ``lrelu`` (ReLU when 0); n = (depth − 4)/3 as in ConstNet. The norm
(``norm``, BatchNorm in the reference's ``--batchnorm``) sits only on odd blocks (phase −1); with
``norm="none"`` there is none. Every conv is initialised from its character of ``init_string``
(underscores ignored; char 0 is the stem) through ``gnj.nn.inits.init_string_layer_inits``:
'h' random, '1' average, 'i' identity, 'k' noisy identity, others noisy average, with phase ±1
and the −1/lrelu constant on odd blocks. The fc is N(0, √(fc_noise/144)) (k = 3·3·16) when
``fc_noise`` > 0 (the reference's ``--noise``, forced to 1 by ``--varnet``), else 0.
``noise_scale`` adds gnj's explicit symmetry-breaking noise after every conv (0: off).
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.models import common
from gnj.models.layers import Layers
from gnj.nn import inits
from gnj.nn.noise import SymmetryNoise
from gnj.proj.constnet.models import blocks_per_stage
from gnj.registry import MODELS


def leaky(x: jax.Array, slope: float) -> jax.Array:
    return jax.nn.leaky_relu(x, slope) if slope > 0 else jax.nn.relu(x)


class LeakyBlock(nn.Module):
    """act(conv3×3(x + b₀)) [+ dropout] [+ norm on odd blocks]; conv init ``kernel_init``."""

    features: int
    stride: int
    index: int
    kernel_init: inits.Initializer
    lrelu: float
    layers: Layers
    droprate: float
    noise_scale: float

    is_block: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x + self.param("bias0", nn.initializers.zeros, (), jnp.float32)
        x = self.layers.conv(self.features, 3, self.stride, kernel_init=self.kernel_init,
                             name="conv")(x)
        x = SymmetryNoise(self.noise_scale)(x, train)
        x = leaky(x, self.lrelu)
        if self.droprate > 0:
            x = nn.Dropout(self.droprate, deterministic=not train)(x)
        if self.index % 2 == 1 and self.layers.has_norm:
            x = self.layers.norm(name="norm")(x, train)
        return x


@MODELS.register("leakynet")
class LeakyNet(nn.Module):
    """LeakyNet WRN-d-k without skips; see the module docstring."""

    init_string: str = "1_ii11_ii11_ii11"
    depth: int = 16
    widen_factor: int = 10
    num_classes: int = 10
    lrelu: float = 0.01
    norm: str = "batch"
    droprate: float = 0.0
    noise_scale: float = 0.0
    fc_noise: float = 0.0

    tiny: ClassVar[dict] = dict(depth=7, widen_factor=1, init_string="1_i_i_i",
                                input_shape=(8, 8, 3))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        n = blocks_per_stage(self.depth, "leakynet")
        if x.ndim != 4 or min(x.shape[1:3]) < 4:
            raise ValueError(f"leakynet: input shape {tuple(x.shape[1:])} is too small for two "
                             "stride-2 stages; need NHWC with H, W ≥ 4")
        layer_inits = inits.init_string_layer_inits(self.init_string, self.lrelu, 1 + 3 * n)
        layers = Layers.from_specs(self.norm, "plain", init=layer_inits[0])
        x = layers.conv(16, 3, name="stem")(x)
        x = SymmetryNoise(self.noise_scale)(x, train)
        widths = [16 * self.widen_factor, 32 * self.widen_factor, 64 * self.widen_factor]
        for i in range(3 * n):
            stage = i // n
            x = LeakyBlock(widths[stage], 2 if stage > 0 and i % n == 0 else 1, i,
                           layer_inits[i + 1], self.lrelu, layers, self.droprate,
                           self.noise_scale, name=f"block{i}")(x, train)
        x = common.global_avg_pool(leaky(x, self.lrelu))
        fc_init = (nn.initializers.normal(math.sqrt(self.fc_noise / 144.0))
                   if self.fc_noise > 0 else nn.initializers.zeros)
        return nn.Dense(self.num_classes, kernel_init=fc_init, name="fc")(x)
