"""The NN-Mass synthetic 2-D sets: points in their bands, labels alternating over segments."""

import numpy as np
import pytest

from gnj.proj.nn_mass import data


@pytest.mark.parametrize("kind", ["linear", "circle"])
def test_synthetic_points_lie_in_their_bands(kind):
    pts = data.synthetic_points(kind, 1200, seed=0)
    band = np.repeat(np.arange(120), 10)
    w = 100 / 120
    r = pts[:, 0] if kind == "linear" else np.hypot(pts[:, 0], pts[:, 1])
    if kind == "linear":
        np.testing.assert_array_equal(pts[:, 0], pts[:, 1])
    assert np.all(r >= band * w - 1e-4) and np.all(r < (band + 1) * w + 1e-4)


def test_segment_labels_alternate_in_generation_order():
    idx = np.arange(12000)
    labels = data.segment_labels(idx, num_seg=4)
    np.testing.assert_array_equal(labels, np.repeat([0, 1, 0, 1], 3000))
    with pytest.raises(ValueError):
        data.segment_labels(idx, 0)


def test_registered_sets_relabel_at_load_time(tfds_dir):
    from gnj.data import datasets

    for name in ("nn_mass_linear", "nn_mass_circle"):
        d = datasets.load(name, data_dir=tfds_dir, num_seg=4)
        assert d.train_x.shape == (12_000, 2) and d.test_x.shape == (1_200, 2)
        assert not d.is_image and d.num_classes == 2
        assert np.bincount(d.train_y).tolist() == [6000, 6000]  # TFDS reads in its own order
        assert not datasets.load(name, data_dir=tfds_dir, num_seg=1).test_y.any()
