"""The Beyond-BatchNorm schedule (``lubana_split``): one drop at a fraction of the run."""

import ml_collections
import numpy as np

from gnj import optim


def test_lubana_split():
    cfg = ml_collections.ConfigDict(dict(lr=0.2, schedule="lubana_split", warmup_epochs=0.0))
    sched = optim.build_schedule(cfg, 10, 100)
    np.testing.assert_allclose([float(sched(74)), float(sched(75))], [0.2, 0.02], rtol=1e-6)
