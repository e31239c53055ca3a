"""torchvision-shaped MobileNetV2 (docs/references.md#torchvision-models).

Layout (torchvision ``mobilenetv2.py``, width multiplier ``width_mult``, channels rounded by
``make_divisible(·, round_nearest)``)::

    stem    conv3×3/2 (3 → c₀ = md(32·wm)) → norm → act
    blocks  per row (t, c, n, s): n inverted residuals, the first with stride s, output md(c·wm):
            [conv1×1 inp→hidden → norm → act]  (only if t ≠ 1; hidden = round(inp·t))
            dw conv3×3/stride hidden→hidden → norm → act
            conv1×1 hidden→oup → norm          (+ x when stride 1 and inp = oup)
    head    conv1×1 → md(1280·max(1, wm)) → norm → act → global mean → dropout(0.2) → Linear

``act`` defaults to ReLU6, convs are kaiming-normal(fan_out) (gain √2), norms γ=1 β=0, the
classifier N(0, 0.01) with zero bias — torchvision's init. Every inverted residual is a block
(``is_block``). ``inverted_residual_setting`` replaces torchvision's rows (t, c, n, s).

Deliberate difference: the input must be at least as large as the total stride (32 for the
standard setting); torchvision would silently run down to 1×1 maps.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import flax.linen as nn
import jax

from gnj.models import common
from gnj.models.layers import ConvNormAct, Layers
from gnj.nn import activations
from gnj.registry import MODELS

SQRT2 = 1.4142135623730951
#: torchvision's (t, c, n, s) rows.
STANDARD_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
    (6, 320, 1, 1))


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's rounding: nearest multiple of ``divisor`` ≥ divisor, never below 0.9·v."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class BlockSpec(NamedTuple):
    """One inverted residual: input/output channels, stride, expansion, hidden width, skip."""

    inp: int
    oup: int
    stride: int
    expand_ratio: int
    hidden: int
    residual: bool


def check_setting(setting, name: str = "mobilenet_v2") -> tuple[tuple[int, int, int, int], ...]:
    """The setting as a tuple of (t, c, n, s) int rows; ValueError if malformed."""
    rows = tuple(tuple(r) for r in setting)
    if not rows or any(len(r) != 4 for r in rows):
        raise ValueError(f"{name}: inverted_residual_setting {setting!r} must be a non-empty "
                         "list of 4-element rows (t, c, n, s)")
    for t, c, n, s in rows:
        if t < 1 or c < 1 or n < 1 or s not in (1, 2):
            raise ValueError(f"{name}: bad row (t={t}, c={c}, n={n}, s={s}); need t, c, n ≥ 1 "
                             "and s in (1, 2)")
    return rows


def block_specs(width_mult: float, setting, round_nearest: int = 8
                ) -> tuple[int, list[BlockSpec], int]:
    """(stem channels, inverted-residual specs, last channels) of a MobileNetV2."""
    rows = check_setting(setting)
    inp = make_divisible(32 * width_mult, round_nearest)
    last = make_divisible(1280 * max(1.0, width_mult), round_nearest)
    specs = []
    for t, c, n, s in rows:
        oup = make_divisible(c * width_mult, round_nearest)
        for i in range(n):
            stride = s if i == 0 else 1
            specs.append(BlockSpec(inp, oup, stride, t, int(round(inp * t)),
                                   stride == 1 and inp == oup))
            inp = oup
    return make_divisible(32 * width_mult, round_nearest), specs, last


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual (see the module docstring)."""

    spec: BlockSpec
    layers: Layers

    is_block: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        s, lay = self.spec, self.layers
        y = x
        if s.expand_ratio != 1:
            y = ConvNormAct(s.hidden, 1, 1, lay, name="expand")(y, train)
        y = ConvNormAct(s.hidden, 3, s.stride, lay, groups=s.hidden, name="depthwise")(y, train)
        y = lay.norm(name="project_norm")(lay.conv(s.oup, 1, name="project")(y), train)
        return x + y if s.residual else y


@MODELS.register("mobilenet_v2")
class MobileNetV2(nn.Module):
    """torchvision MobileNetV2 with any norm / activation / conv / init spec."""

    num_classes: int = 1000
    width_mult: float = 1.0
    inverted_residual_setting: tuple | None = None  # None → STANDARD_SETTING
    round_nearest: int = 8
    dropout: float = 0.2
    norm: str = "batch"
    act: str = "relu6"
    conv: str = "plain"
    weight_init: str = f"kaiming_normal(mode='fan_out', gain={SQRT2})"
    head_std: float = 0.01

    tiny: ClassVar[dict] = dict(width_mult=0.25, inverted_residual_setting=(
        (1, 8, 1, 1), (6, 8, 2, 2), (6, 16, 1, 2)), input_shape=(8, 8, 3))

    def setting(self) -> tuple[tuple[int, int, int, int], ...]:
        return check_setting(STANDARD_SETTING if self.inverted_residual_setting is None
                             else self.inverted_residual_setting)

    def specs(self) -> tuple[int, list[BlockSpec], int]:
        """(stem channels, block specs, last channels) from the fields (no forward pass)."""
        if self.width_mult <= 0:
            raise ValueError(f"mobilenet_v2: width_mult {self.width_mult} must be > 0")
        return block_specs(self.width_mult, self.setting(), self.round_nearest)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        stem, specs, last = self.specs()
        reduction = 2 * 2 ** sum(s.stride == 2 for s in specs)
        if min(x.shape[1:3]) < reduction:
            raise ValueError(f"mobilenet_v2: input {x.shape[1:3]} is too small for its stride-2 "
                             f"stages; need at least {reduction}×{reduction}")
        # every conv's init takes the ReLU gain, whatever the activation
        layers = Layers.from_specs(self.norm, self.conv, self.act, self.weight_init,
                                   gain=activations.gain("relu"))
        x = ConvNormAct(stem, 3, 2, layers, name="stem")(x, train)
        for i, s in enumerate(specs):
            x = InvertedResidual(s, layers, name=f"block{i}")(x, train)
        x = ConvNormAct(last, 1, 1, layers, name="last")(x, train)
        x = common.global_avg_pool(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return common.dense(self.num_classes, kernel_init=nn.initializers.normal(self.head_std),
                            bias_init=nn.initializers.zeros, name="classifier")(x)
