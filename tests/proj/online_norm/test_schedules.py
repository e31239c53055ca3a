"""The Online Normalization batch-size rule: m′ = m^(B/B₀), lr′ = lr·(B/B₀)(1−m′)/(1−m)."""

import numpy as np
import pytest

from gnj.proj.online_norm.schedules import scale_lr_and_momentum


def test_online_norm_batch_rule_closed_form():
    lr, m = scale_lr_and_momentum(0.1, 0.9, 32, 256)
    np.testing.assert_allclose(m, 0.9 ** 0.125)
    np.testing.assert_allclose(lr, 0.1 * 0.125 * (1 - 0.9 ** 0.125) / 0.1)
    assert scale_lr_and_momentum(0.1, 0.9, 128, 128) == pytest.approx((0.1, 0.9))
    assert scale_lr_and_momentum(0.1, 0.0, 64, 128) == (0.05, 0.0)
