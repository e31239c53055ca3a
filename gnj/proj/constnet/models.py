"""ConstNet (Blumenfeld, Gilboa, Soudry, ICML 2020; docs/proj/constnet.md#constnet).

**ConstNet** (``wrn_constnet``): a Wide ResNet with *single-conv* blocks, channels
[16, 16k, 32k, 64k], n = (depth − 4)/3 blocks per stage (the reference's rule for its single-conv
blocks: depth 16 → 4 blocks per stage). BN path: x̂ = BN(x), out = conv3×3(ReLU(x̂)) [+ dropout],
out += x if the shape is kept, else conv1×1(ReLU(x̂)). Fixup path (``norm="none"``): x̂ = x + b₀,
out = s·(conv(ReLU(x̂)) + b₁), same residual rule. The 1×1 projection reads ReLU(x̂): the
reference's ReLU is in place, so by the time its projection reads x̂ the tensor holds ReLU(x̂)
[as-written] (docs/proj/constnet.md#projection-input).
``projection_after_relu=False`` feeds the projection x̂ itself (gnj's behaviour before it
followed the reference; 0.4 relative forward difference).
Head: stem
conv3×3 → stages → ReLU → global mean → fc. ConstNet init: block convs 0, stem and 1×1
projections ``const_avg`` (1/in at the centre tap), fc 0 — every channel of every layer is
identical and stays so unless something breaks the symmetry: ``noise_scale`` (explicit forward
and backward noise on every conv output, standing in for cuDNN non-determinism, which XLA does
not have), ``droprate`` (dropout after each block conv) or ``dropl1`` (dropout on the stem).
``varnet=True`` is the random He (fan_out) baseline. The reference evaluates each stage twice
[as-written]; ``double_forward=True`` reproduces that, the default evaluates once.

LeakyNet, the no-skip twin, is in ``gnj.proj.constnet.leakynet``.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.models import common
from gnj.models.layers import Layers
from gnj.nn import inits
from gnj.nn.noise import SymmetryNoise
from gnj.registry import MODELS


def blocks_per_stage(depth: int, model: str) -> int:
    """n = (depth − 4)/3 single-conv blocks per stage: the reference's rule for its single-conv
    WRN (depth 16 → 4 blocks per stage), not the two-conv WRN's (depth − 4)/6."""
    if depth < 7 or (depth - 4) % 3:
        raise ValueError(f"{model}: depth {depth} is not 3n+4 (single-conv blocks, n ≥ 1); "
                         "allowed: 7, 10, 13, 16, 19, 22, 25, 28, ...")
    return (depth - 4) // 3


class ConstBlock(nn.Module):
    """One single-conv WRN block, BN path or (``norm="none"``) Fixup path; see the module doc."""

    features: int
    stride: int
    layers: Layers
    projection_init: inits.Initializer
    droprate: float
    noise_scale: float
    projection_after_relu: bool = True

    is_block: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        fixup = not self.layers.has_norm
        if fixup:
            xh = x + self.param("bias0", nn.initializers.zeros, (), jnp.float32)
        else:
            xh = self.layers.norm(name="norm")(x, train)
        act = nn.relu(xh)
        out = self.layers.conv(self.features, 3, self.stride, name="conv")(act)
        out = SymmetryNoise(self.noise_scale)(out, train)
        if fixup:
            out = self.param("scale", nn.initializers.ones, (), jnp.float32) * (
                out + self.param("bias1", nn.initializers.zeros, (), jnp.float32))
        if self.droprate > 0:
            out = nn.Dropout(self.droprate, deterministic=not train)(out)
        if self.stride == 1 and x.shape[-1] == self.features:
            return x + out
        res = self.layers.conv(self.features, 1, self.stride, kernel_init=self.projection_init,
                               name="conv_res")(act if self.projection_after_relu else xh)
        return SymmetryNoise(self.noise_scale)(res, train) + out


@MODELS.register("wrn_constnet")
class ConstNet(nn.Module):
    depth: int = 16
    widen_factor: int = 10
    num_classes: int = 10
    norm: str = "batch"
    varnet: bool = False
    droprate: float = 0.0
    dropl1: bool = False
    noise_scale: float = 0.0
    double_forward: bool = False
    projection_after_relu: bool = True

    tiny: ClassVar[dict] = dict(depth=7, widen_factor=1, input_shape=(8, 8, 3))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        n = blocks_per_stage(self.depth, "wrn_constnet")
        if min(x.shape[1:3]) < 4:
            raise ValueError(f"wrn_constnet: input {x.shape[1:3]} is too small for two stride-2 "
                             "stages; need at least 4×4")
        # block convs: 0 (random He fan_out with varnet); stem and projections: const_avg
        const_init = inits.varnet(relu_gain=False) if self.varnet else inits.const_avg()
        layers = Layers.from_specs(self.norm, "plain", "relu",
                                   inits.varnet() if self.varnet else inits.zeros())
        x = layers.conv(16, 3, kernel_init=const_init, name="stem")(x)
        x = SymmetryNoise(self.noise_scale)(x, train)
        if self.dropl1 and self.droprate > 0:
            x = nn.Dropout(self.droprate, deterministic=not train)(x)
        widths = [16 * self.widen_factor, 32 * self.widen_factor, 64 * self.widen_factor]
        for stage, width in enumerate(widths):
            blocks = [ConstBlock(width, 2 if stage > 0 and i == 0 else 1, layers, const_init,
                                 self.droprate, self.noise_scale, self.projection_after_relu,
                                 name=f"stage{stage + 1}_block{i}")
                      for i in range(n)]
            inp = x
            for _ in range(2 if self.double_forward else 1):
                x = inp
                for block in blocks:
                    x = block(x, train)
        x = common.global_avg_pool(nn.relu(x))
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="fc")(x)


MODELS.alias({"constnet": "wrn_constnet"})
