"""torchvision-shaped MobileNetV2 (used by NN_Mass ``model_zoo`` / ``train_imagenet.py``;
REFERENCE.md §4.6).

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
(``is_block``). NN-Mass of the residual blocks: ``gnj.models.nn_mass`` (§4.2).

Presets: ``mobilenet_v2`` (torchvision's standard setting, NN-Mass 1287 at wm 1) and
``mobilenet_v2_nn_mass_deep``, the setting hard-coded in NN_Mass ``train_imagenet.py`` (wm 1.1 and
the deeper rows ``DEEP_SETTING``; NN-Mass 1797) [as-written there: it ignores ``-a`` and
``--width-mult``; here it is simply a preset].

Deliberate difference: the input must be at least as large as the total stride (32 for the
standard setting); torchvision would silently run down to 1×1 maps.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import flax.linen as nn
import jax

from gnj.models import common
from gnj.registry import MODELS

SQRT2 = 1.4142135623730951
#: torchvision's (t, c, n, s) rows.
STANDARD_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
    (6, 320, 1, 1))
#: NN_Mass ``train_imagenet.py``'s deeper rows (used with width_mult 1.1).
DEEP_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 2, 1), (6, 24, 3, 2), (6, 32, 4, 2), (6, 64, 5, 2), (6, 96, 4, 1), (6, 160, 3, 2),
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


class ConvNormAct(nn.Module):
    """conv k×k (stride, groups) → norm → act (torchvision ``ConvBNReLU``)."""

    features: int
    kernel_size: int
    stride: int
    groups: int
    norm: str
    act: str
    conv: str
    weight_init: str

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = common.conv(self.conv, self.features, self.kernel_size, self.stride,
                        kernel_init=common.make_init(self.weight_init, "relu"),
                        groups=self.groups, name="conv")(x)
        return common.make_act(self.act)(common.make_norm(self.norm, "norm")(x, train))


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual (see the module docstring)."""

    spec: BlockSpec
    norm: str
    act: str
    conv: str
    weight_init: str

    is_block: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        s = self.spec
        cna = lambda f, k, stride, groups, name: ConvNormAct(
            f, k, stride, groups, self.norm, self.act, self.conv, self.weight_init, name=name)
        y = x
        if s.expand_ratio != 1:
            y = cna(s.hidden, 1, 1, 1, "expand")(y, train)
        y = cna(s.hidden, 3, s.stride, s.hidden, "depthwise")(y, train)
        y = common.conv(self.conv, s.oup, 1, kernel_init=common.make_init(self.weight_init, "relu"),
                        name="project")(y)
        y = common.make_norm(self.norm, "project_norm")(y, train)
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
        cna = lambda f, k, stride, name: ConvNormAct(f, k, stride, 1, self.norm, self.act,
                                                     self.conv, self.weight_init, name=name)
        x = cna(stem, 3, 2, "stem")(x, train)
        for i, s in enumerate(specs):
            x = InvertedResidual(s, self.norm, self.act, self.conv, self.weight_init,
                                 name=f"block{i}")(x, train)
        x = cna(last, 1, 1, "last")(x, train)
        x = common.global_avg_pool(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return common.dense(self.num_classes, kernel_init=nn.initializers.normal(self.head_std),
                            bias_init=nn.initializers.zeros, name="classifier")(x)


@MODELS.register("mobilenet_v2_nn_mass_deep")
class MobileNetV2Deep(MobileNetV2):
    """NN_Mass ``train_imagenet.py``'s MobileNetV2: width 1.1, ``DEEP_SETTING`` (NN-Mass 1797)."""

    width_mult: float = 1.1
    inverted_residual_setting: tuple | None = DEEP_SETTING
