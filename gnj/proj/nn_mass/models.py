"""The NN-Mass reference's ImageNet MobileNetV2 preset (docs/proj/nn_mass.md#mobilenet-v2).

``mobilenet_v2_nn_mass_deep``: the core ``mobilenet_v2`` with width multiplier 1.1 and the
deeper rows ``DEEP_SETTING`` (NN-Mass 1797; the standard setting at width 1 has 1287), the
setting the reference's ImageNet training script hard-codes whatever its arguments say; here it
is simply a preset.
"""

from __future__ import annotations

from gnj.models.mobilenet_v2 import MobileNetV2
from gnj.registry import MODELS

#: the reference's deeper (t, c, n, s) rows (used with width_mult 1.1)
DEEP_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 2, 1), (6, 24, 3, 2), (6, 32, 4, 2), (6, 64, 5, 2), (6, 96, 4, 1), (6, 160, 3, 2),
    (6, 320, 1, 1))


@MODELS.register("mobilenet_v2_nn_mass_deep")
class MobileNetV2Deep(MobileNetV2):
    """``mobilenet_v2`` at width 1.1 with ``DEEP_SETTING``."""

    width_mult: float = 1.1
    inverted_residual_setting: tuple | None = DEEP_SETTING
