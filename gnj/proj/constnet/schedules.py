"""The learning-rate schedule of the wide-ResNet recipe: drops counted back from the end of the
run. See docs/proj/constnet.md#lr-schedule.
"""

from __future__ import annotations

import optax

from gnj.registry import SCHEDULES


@SCHEDULES.register("wrn")
def wrn(base_lr: float, steps_per_epoch: int, total_steps: int,
        drops: tuple[int, ...] = (140, 80, 40), factor: float = 0.2) -> optax.Schedule:
    """×``factor`` at epochs E−d for each d in ``drops`` (E = the run's epochs)."""
    epochs = total_steps / max(steps_per_epoch, 1)
    bounds: dict[int, float] = {}
    for d in drops:
        # The reference multiplies when e = epoch+1 ≥ E−d, i.e. from epoch index E−d−1.
        step = int(round(max(epochs - d - 1, 0) * steps_per_epoch))
        bounds[step] = bounds.get(step, 1.0) * factor
    return optax.piecewise_constant_schedule(base_lr, bounds)
