"""The user's own data: ``image_folder(...)`` and ``arrays(...)`` datasets, and their errors."""

import os

import numpy as np
import pytest

from configs import default
from gnj import train
from gnj.data import source, user_data

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


def _write_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def _bright_dark_folder(root, n_per_class=12, size=8, seed=0):
    """Two classes told apart by brightness: ``bright`` (pixels 170..254), ``dark`` (1..85)."""
    rng = np.random.default_rng(seed)
    images = {}
    for name, (lo, hi) in (("dark", (1, 86)), ("bright", (170, 255))):
        for i in range(n_per_class):
            a = rng.integers(lo, hi, (size, size, 3), dtype=np.uint8)
            path = os.path.join(root, name, f"{i:03d}.png")
            _write_png(path, a)
            images[path] = a
    return images


def _config(name, **overrides):
    c = default.get_config("runlocal")
    c.dataset.name = name
    c.model = default.ml_collections.ConfigDict(dict(name="mlp", hidden=(16,), norm="batch"))
    c.quiet = True
    c.batch_size = 8
    c.eval_batch_size = 8
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def test_image_folder_loads_every_png_and_trains_end_to_end(tmp_path):
    written = _bright_dark_folder(str(tmp_path / "imgs"))
    spec = f"image_folder(path={str(tmp_path / 'imgs')!r}, test_fraction=0.25)"
    data = user_data.load_image_folder(str(tmp_path / "imgs"), test_fraction=0.25)
    assert data.num_classes == 2 and data.input_shape == (8, 8, 3)
    assert (len(data.train_y), len(data.test_y)) == (18, 6)
    assert np.bincount(data.test_y).tolist() == [3, 3]  # stratified: 3 of 12 per class
    # every file appears once, with its pixels, labelled by its folder in sorted order (bright=0)
    by_bytes = {a.tobytes(): int("dark" in p) for p, a in written.items()}
    got = np.concatenate([data.train_x, data.test_x])
    labels = np.concatenate([data.train_y, data.test_y])
    assert sorted(x.tobytes() for x in got) == sorted(by_bytes)
    assert all(by_bytes[x.tobytes()] == y for x, y in zip(got, labels))
    pixels = data.train_x.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(data.mean, pixels.mean(0), rtol=1e-5)
    np.testing.assert_allclose(data.std, pixels.std(0), rtol=1e-5)

    c = _config(spec, num_steps=30, log_every_steps=10, eval_every_steps=30,
                checkpoint_every_steps=10)
    result = train.train_and_evaluate(c, str(tmp_path / "run"))
    assert result["eval/accuracy"] == 1.0  # brightness separates the classes
    assert "30" in os.listdir(tmp_path / "run" / "checkpoints")


def test_image_folder_train_test_folders_resize_and_grey(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "split"
    shapes = {"train/cat/a.png": (6, 9), "train/cat/b.png": (8, 8), "train/dog/c.png": (5, 5),
              "test/dog/d.png": (7, 3)}
    for rel, hw in shapes.items():
        _write_png(str(root / rel), rng.integers(0, 256, hw, dtype=np.uint8))
    data = user_data.load_image_folder(str(root), size=(4, 5))
    assert data.train_x.shape == (3, 4, 5, 1) and data.test_x.shape == (1, 4, 5, 1)
    assert data.train_y.tolist() == [0, 0, 1] and data.test_y.tolist() == [1]
    expected = np.asarray(Image.open(root / "test/dog/d.png").resize((5, 4), Image.BILINEAR))
    np.testing.assert_array_equal(data.test_x[0, ..., 0], expected)
    rgb = user_data.load_image_folder(str(root), size=4, channels=3)
    assert rgb.train_x.shape == (3, 4, 4, 3)


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        user_data.load_image_folder(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no class folders"):
        user_data.load_image_folder(str(tmp_path / "empty"))
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no image files under"):
        user_data.load_image_folder(str(tmp_path / "noimg"))
    mixed = tmp_path / "mixed"
    _write_png(str(mixed / "a" / "1.png"), np.zeros((4, 4), np.uint8))
    _write_png(str(mixed / "a" / "2.png"), np.zeros((4, 6), np.uint8))
    with pytest.raises(ValueError, match=r"differ in size.*4x6.*size=\(H, W\)"):
        user_data.load_image_folder(str(mixed))
    (mixed / "a" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="notes.txt.*is not a readable image"):
        user_data.load_image_folder(str(mixed), size=4)
    with pytest.raises(ValueError, match="size must be"):
        user_data.load_image_folder(str(mixed), size=(4, 0))
    with pytest.raises(ValueError, match="test_fraction"):
        user_data.load_image_folder(str(mixed), test_fraction=1.0)
    c = _config(f"image_folder(path={str(mixed)!r}, sise=4)")
    with pytest.raises(ValueError, match="unknown option.*sise.*valid options: path, size"):
        source.build(c)
    with pytest.raises(ValueError, match="path is required"):
        source.build(_config("image_folder(size=4)"))
    with pytest.raises(ValueError, match="'digits' takes no arguments"):
        source.build(_config("digits(size=4)"))


def test_arrays_npz_split_batches_and_label_checks(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (40, 4, 4), dtype=np.uint8)
    labels = rng.integers(0, 3, 40)
    path = str(tmp_path / "d.npz")
    np.savez(path, images=images, labels=labels)
    c = _config(f"arrays(path={path!r}, test_fraction=0.2)")
    src = source.build(c)
    data = src.data
    assert data.input_shape == (4, 4, 1) and data.num_classes == labels.max() + 1
    assert (len(data.train_y), len(data.test_y)) == (32, 8)
    # the rows are the file's rows: each (image, label) pair is one of the file's
    pairs = {(x.tobytes(), int(y)) for x, y in zip(images[..., None], labels)}
    assert {(x.tobytes(), int(y)) for x, y in zip(data.train_x, data.train_y)} <= pairs
    held_out = {x.tobytes() for x in data.test_x}
    assert not held_out & {x.tobytes() for x in data.train_x}
    batch = next(src.train_batches(3))  # the step-indexed pipeline of the built-in sets
    rows = src.batches.indices(3)
    np.testing.assert_array_equal(batch["image"], data.train_x[rows])

    feats = str(tmp_path / "f.npz")
    np.savez(feats, train_images=rng.normal(size=(8, 5)), train_labels=np.arange(8) % 2,
             test_images=rng.normal(size=(2, 5)), test_labels=np.array([0, 1]))
    f = user_data.load_arrays(feats)
    assert not f.is_image and f.train_x.dtype == np.float64 and f.input_shape == (5,)
    np.testing.assert_array_equal(f.test_x, np.load(feats)["test_images"])

    bad = str(tmp_path / "bad.npz")
    np.savez(bad, images=images, labels=np.where(np.arange(40) == 7, 5, labels))
    with pytest.raises(ValueError, match=r"label 5 .* out of range; valid labels are 0 \.\. 2"):
        user_data.load_arrays(bad, num_classes=3)
    np.savez(bad, images=images, labels=-labels - 1)
    with pytest.raises(ValueError, match="label -. .*out of range"):
        user_data.load_arrays(bad)
    np.savez(bad, images=images, labels=labels.astype(np.float32))
    with pytest.raises(ValueError, match="expected integers"):
        user_data.load_arrays(bad)
    np.savez(bad, x=images, y=labels)
    with pytest.raises(ValueError, match=r"keys \['x', 'y'\]; expected 'images' and 'labels'"):
        user_data.load_arrays(bad)
    np.savez(bad, images=images, labels=labels[:30])
    with pytest.raises(ValueError, match="40 images but 30 labels"):
        user_data.load_arrays(bad)
    np.savez(bad, images=images.astype(np.int64), labels=labels)
    with pytest.raises(ValueError, match="dtype int64"):
        user_data.load_arrays(bad)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        user_data.load_arrays(str(tmp_path / "missing.npz"))
