"""The batch-size rule of the Online Normalization recipes: a new batch size keeps the
momentum's time constant in examples (docs/proj/online_norm.md#batch-size-rule).
"""

from __future__ import annotations


def scale_lr_and_momentum(lr: float, momentum: float, batch_size: int, base_batch: int
                          ) -> tuple[float, float]:
    """``(lr′, m′)`` for batch B from the recipe's (lr, m) at batch B₀.

    m′ = m^(B/B₀) and lr′ = lr·(B/B₀)·(1−m′)/(1−m) (lr′ = lr·B/B₀ without momentum).
    """
    ratio = batch_size / base_batch
    if momentum == 0:
        return lr * ratio, 0.0
    m2 = momentum ** ratio
    return lr * ratio * (1 - m2) / (1 - momentum), m2
