"""Data: offline builders, the step-indexed pipeline, augmentation, TFDS loading and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from gnj.data import datasets, pipeline


def test_digits_builder_split_and_values(tfds_dir):
    d = datasets.load("digits", data_dir=tfds_dir)
    assert d.train_x.shape == (1437, 8, 8, 1) and d.test_x.shape == (360, 8, 8, 1)
    assert d.train_x.dtype == np.uint8 and d.num_classes == 10
    from sklearn.datasets import load_digits

    raw = load_digits()
    # Same multiset of (image, label) pairs as sklearn's, scaled ×16 and clipped.
    expected = np.clip(raw.images * 16, 0, 255).astype(np.uint8).reshape(len(raw.target), -1)
    got = np.concatenate([d.train_x, d.test_x]).reshape(len(raw.target), -1)
    key = lambda x, y: sorted(map(bytes, np.concatenate([x, y[:, None].astype(np.uint8)], 1)))
    assert key(got, np.concatenate([d.train_y, d.test_y])) == key(expected, raw.target)


def _fake_data(n=50, shape=(4, 4, 1)):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (n, *shape), dtype=np.uint8)
    y = np.arange(n, dtype=np.int32)  # label = row index, to identify rows
    return datasets.InMemoryData(x, y, x[:7], y[:7], 50, np.zeros(1, np.float32),
                                 np.ones(1, np.float32), True)


def test_batch_depends_only_on_seed_and_step():
    d = _fake_data()
    a, b = pipeline.TrainBatches(d, 8, seed=3), pipeline.TrainBatches(d, 8, seed=3)
    order = [5, 0, 11, 5, 6]
    for s in order:  # random access (resume) gives the same batches as sequential access
        np.testing.assert_array_equal(a.local_batch(s)["label"], b.local_batch(s)["label"])
    assert a.steps_per_epoch == 6  # drop_last
    epoch0 = np.concatenate([a.indices(s) for s in range(6)])
    assert len(set(epoch0)) == 48  # no repeats within an epoch
    assert not np.array_equal(a.indices(0), pipeline.TrainBatches(d, 8, seed=4).indices(0))


def test_hosts_read_disjoint_slices_of_the_global_batch():
    d = _fake_data()
    full = pipeline.TrainBatches(d, 8, seed=1).indices(3)
    parts = [pipeline.TrainBatches(d, 8, 1, p, 4).local_batch(3)["label"] for p in range(4)]
    np.testing.assert_array_equal(np.concatenate(parts), d.train_y[full])
    with pytest.raises(ValueError, match="not divisible by the process count 3"):
        pipeline.TrainBatches(d, 8, 1, 0, 3)


def test_eval_batches_cover_test_set_once():
    d = _fake_data()
    seen = []
    for b in pipeline.eval_batches(d, 4):
        seen.extend(b["label"][b["mask"] > 0].tolist())
        assert b["image"].shape[0] == 4
    assert seen == list(range(7))


def test_random_crop_and_flip_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5, 5, 2)).astype(np.float32)
    key = jax.random.PRNGKey(0)
    out = np.asarray(pipeline.random_crop(jnp.asarray(x), key, 2))
    offs = np.asarray(jax.random.randint(key, (6, 2), 0, 5))
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    for i, (dy, dx) in enumerate(offs):
        np.testing.assert_array_equal(out[i], padded[i, dy:dy + 5, dx:dx + 5])
    flipped = np.asarray(pipeline.random_flip(jnp.asarray(x), key))
    flags = np.asarray(jax.random.bernoulli(key, 0.5, (6, 1, 1, 1)))[:, 0, 0, 0]
    for i, f in enumerate(flags):
        np.testing.assert_array_equal(flipped[i], x[i, :, ::-1] if f else x[i])


def test_preprocess_normalises_with_dataset_stats():
    x = np.full((2, 3, 3, 3), 51, np.uint8)  # 0.2
    mean, std = jnp.array([0.1, 0.2, 0.3]), jnp.array([0.5, 0.5, 0.5])
    out = pipeline.preprocess(jnp.asarray(x), mean, std, True)
    np.testing.assert_allclose(out[0, 0, 0], [0.2, 0.0, -0.2], atol=1e-6)


def test_tfds_catalogue_dataset_loads_under_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=20, data_dir=str(tmp_path)):
        d = datasets.load("cifar10", data_dir=str(tmp_path))
    assert d.train_x.shape == (20, 32, 32, 3) and d.train_x.dtype == np.uint8
    assert d.num_classes == 10 and d.train_y.max() < 10


def test_missing_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(datasets.DatasetNotPreparedError, match="tfds build cifar100"):
        datasets.load("cifar100", data_dir=str(tmp_path))


def test_unknown_dataset_lists_valid():
    with pytest.raises(ValueError, match="valid datasets:.*cifar10.*digits"):
        datasets.load("imagenette")


def test_augment_rejects_bad_options():
    with pytest.raises(ValueError, match="pad_mode"):
        pipeline.Augment(crop_padding=4, pad_mode="wrap")
