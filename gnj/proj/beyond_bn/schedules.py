"""The learning-rate schedule of the Beyond-BatchNorm recipe: a constant base rate, then one
drop for the last part of the run (after the optional warm-up of ``gnj.optim``).

See docs/proj/beyond_bn.md#lr-schedule.
"""

from __future__ import annotations

import optax

from gnj.registry import SCHEDULES


@SCHEDULES.register("lubana_split")
def lubana_split(base_lr: float, steps_per_epoch: int, total_steps: int,
                 split: float = 0.75, final_ratio: float = 0.1) -> optax.Schedule:
    """``base_lr`` for ⌊split·T⌋ steps (T = the whole run), then ``base_lr·final_ratio``."""
    return optax.piecewise_constant_schedule(base_lr, {int(split * total_steps): final_ratio})
