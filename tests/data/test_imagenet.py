"""Streaming ImageNet on ``tfds.testing.mock_data``: deterministic by (seed, step), exact resume,
host sharding, padded eval batches; the crops and normalisation checked against closed forms."""

from __future__ import annotations

import math

import ml_collections
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from gnj.data import imagenet as inet  # noqa: E402
from gnj.registry import DATASETS  # noqa: E402

N_MOCK = 20


def _config(name="imagenet2012", seed=0, batch=4, eval_batch=8, **dataset):
    c = ml_collections.ConfigDict()
    c.seed, c.batch_size, c.eval_batch_size = seed, batch, eval_batch
    c.dataset = ml_collections.ConfigDict(dict(
        name=name, data_dir="/nonexistent/tfds", mean=(), std=(), image_size=16, eval_resize=18,
        shuffle_buffer=8, num_train_examples=N_MOCK, num_eval_examples=N_MOCK,
        augment=ml_collections.ConfigDict(dict(crop_padding=0, pad_mode="constant",
                                               flip=True))))
    c.dataset.update(dataset)
    return c


@pytest.fixture
def mock():
    with tfds.testing.mock_data(num_examples=N_MOCK):
        yield


def _take(source, start, n):
    it = source.train_batches(start)
    return [next(it) for _ in range(n)]


def test_registered_names():
    for name in ("imagenet2012", "imagenet_resized/32x32", "imagenet_resized/64x64",
                 "downsampled_imagenet/32x32", "downsampled_imagenet/64x64", "digits_32x32"):
        assert name in DATASETS


def test_train_stream_is_a_function_of_seed_and_step(mock):
    src = DATASETS.get("imagenet2012")(_config())
    assert src.steps_per_epoch == N_MOCK // 4 and src.input_shape == (16, 16, 3)
    batches = _take(src, 0, 2 * src.steps_per_epoch)
    b = batches[0]
    assert b["image"].shape == (4, 16, 16, 3) and b["image"].dtype == np.uint8
    assert b["label"].dtype == np.int32
    again = _take(DATASETS.get("imagenet2012")(_config()), 0, 2 * src.steps_per_epoch)
    for x, y in zip(batches, again):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
    for start in (3, 6):  # mid-epoch and in the second epoch
        resumed = _take(src, start, 2)
        for k in ("image", "label"):
            np.testing.assert_array_equal(resumed[0][k], batches[start][k])
            np.testing.assert_array_equal(resumed[1][k], batches[start + 1][k])
    # a new epoch is a new permutation with new crops; another seed another stream
    first, second = batches[: src.steps_per_epoch], batches[src.steps_per_epoch:]
    assert not all(np.array_equal(a["image"], b["image"]) for a, b in zip(first, second))
    other = _take(DATASETS.get("imagenet2012")(_config(seed=1)), 0, 1)[0]
    assert not np.array_equal(other["image"], batches[0]["image"])


def test_eval_batches_are_padded_and_masked(mock):
    src = DATASETS.get("imagenet2012")(_config(num_eval_examples=N_MOCK))
    batches = list(src.eval_batches())
    assert len(batches) == math.ceil(N_MOCK / 8)
    assert [float(b["mask"].sum()) for b in batches] == [8.0, 8.0, 4.0]
    assert all(b["image"].shape == (8, 16, 16, 3) for b in batches)


def test_hosts_get_disjoint_shards_and_the_same_number_of_steps(mock, monkeypatch):
    splits, steps, evals = [], [], []
    for pid in (0, 1):
        monkeypatch.setattr(inet.jax, "process_count", lambda: 2)
        monkeypatch.setattr(inet.jax, "process_index", lambda pid=pid: pid)
        src = DATASETS.get("imagenet2012")(_config(batch=4, num_train_examples=21,
                                                   num_eval_examples=19))
        splits.append(src._host_split("train"))
        steps.append(src.steps_per_epoch)
        evals.append(len(list(src.eval_batches())))
        assert src.local_batch == 2
    assert splits == list(tfds.even_splits("train", n=2)) and splits[0] != splits[1]
    assert steps == [10 // 2, 10 // 2]  # ⌊⌊21/2⌋/2⌋
    assert evals == [math.ceil(10 / 4)] * 2  # the largest shard (10) in local batches of 4
    with pytest.raises(ValueError, match="not divisible by the 2 hosts"):
        DATASETS.get("imagenet2012")(_config(batch=3))


def test_eval_resize_and_centre_crop_closed_form():
    src = object.__new__(inet.StreamingSource)
    src.spec, src.image_size, src.eval_resize = inet.StreamSpec("imagenet2012"), 16, 18
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (18, 25, 3), dtype=np.uint8)  # shorter side = eval_resize
    out = src._eval_image(tf.io.encode_png(img)).numpy()
    np.testing.assert_array_equal(out, img[1:17, 4:20])  # (18−16)//2, (25−16)//2


def test_random_resized_crop_respects_area_and_aspect_ranges():
    src = object.__new__(inet.StreamingSource)
    src.spec, src.image_size = inet.StreamSpec("imagenet2012"), 32
    h, w = 180, 240
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    img = np.stack([rows, cols // 2, np.zeros_like(rows)], -1).astype(np.uint8)  # R=row, G=col/2
    encoded = tf.io.encode_png(img)
    flips, areas = 0, []
    for i in range(40):
        key = tf.constant([7, i], tf.int64)
        out = src._train_image(encoded, key).numpy().astype(float)
        again = src._train_image(encoded, key).numpy()
        np.testing.assert_array_equal(out, again)  # stateless: same key, same crop
        r, g = out[..., 0], 2 * out[..., 1]
        flipped = g[0, 0] > g[0, -1]
        flips += flipped
        ch = (r.max() - r.min()) * 32 / 31  # pixel-centre sampling spans (n−1)/n of the box
        cw = abs(g[0, -1] - g[0, 0]) * 32 / 31
        area = ch * cw / (h * w)
        areas.append(area)
        assert 0.08 * 0.8 <= area <= 1.0 + 1e-6
        if area < 0.99:  # a sampled box (not the whole-image fallback)
            assert 0.75 * 0.85 <= cw / ch <= 4 / 3 * 1.15
        assert np.all(np.diff(r[:, 0]) >= 0)  # rows never reversed
    assert 5 <= flips <= 35 and max(areas) - min(areas) > 0.3


def test_preprocess_normalises_with_imagenet_constants():
    src = object.__new__(inet.StreamingSource)
    src.augment = None
    src.mean = np.asarray(inet.IMAGENET_MEAN, np.float32) * 255
    src.std = np.asarray(inet.IMAGENET_STD, np.float32) * 255
    x = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype(np.uint8)
    got = np.asarray(src.preprocess(x, None))
    want = (x / 255.0 - np.array(inet.IMAGENET_MEAN)) / np.array(inet.IMAGENET_STD)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_imagenet_resized_streams_native_size_and_augments_on_device(mock):
    import jax

    c = _config("imagenet_resized/32x32", augment=ml_collections.ConfigDict(dict(
        crop_padding=4, pad_mode="reflect", flip=True)))
    src = DATASETS.get("imagenet_resized/32x32")(c)
    assert src.input_shape == (32, 32, 3) and src.augment.pad_mode == "reflect"
    b = _take(src, 0, 1)[0]
    assert b["image"].shape == (4, 32, 32, 3)
    plain = np.asarray(src.preprocess(b["image"], None))
    aug = np.asarray(src.preprocess(b["image"], jax.random.PRNGKey(0)))
    assert plain.shape == aug.shape and not np.allclose(plain, aug)


def test_unlabelled_downsampled_imagenet_points_to_imagenet_resized():
    with pytest.raises(ValueError, match="no labels.*imagenet_resized/32x32"):
        DATASETS.get("downsampled_imagenet/32x32")(_config("downsampled_imagenet/32x32"))


def test_unprepared_imagenet_says_how_to_prepare_it(tmp_path):
    c = _config(data_dir=str(tmp_path))
    src = DATASETS.get("imagenet2012")(c)
    with pytest.raises(FileNotFoundError, match="manual_dir"):
        next(src.train_batches(0))


def test_digits_32x32_is_the_upsampled_digits_set(tfds_dir):
    from gnj.data import load

    c = _config("digits_32x32", data_dir=tfds_dir, batch=32, eval_batch=40)
    src = DATASETS.get("digits_32x32")(c)
    digits = load("digits", tfds_dir)
    assert src.input_shape == (32, 32, 1)
    np.testing.assert_array_equal(src.data.train_x[:, ::4, ::4], digits.train_x)
    np.testing.assert_array_equal(src.data.train_x[:, 3::4, 2::4], digits.train_x)
