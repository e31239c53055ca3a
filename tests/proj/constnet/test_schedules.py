"""The wide-ResNet schedule (``wrn``): drops counted back from the end of the run."""

import ml_collections
import numpy as np

from gnj import optim


def test_wrn_schedule_drops():
    # E=200 epochs: the reference decays at epochs 60, 120, 160 (e = epoch+1 ≥ E−d).
    cfg = ml_collections.ConfigDict(dict(lr=1.0, schedule="wrn", warmup_epochs=0.0))
    sched = optim.build_schedule(cfg, steps_per_epoch=1, total_steps=200)
    assert float(sched(58)) == 1.0
    np.testing.assert_allclose([float(sched(s)) for s in (59, 119, 159)], [0.2, 0.04, 0.008],
                               rtol=1e-6)
