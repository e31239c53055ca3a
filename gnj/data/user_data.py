"""The user's own data: a folder of class-named image folders, or a NumPy ``.npz`` file.

Both are registered in ``DATASETS`` and named in a config with inline arguments::

    dataset.name = "image_folder(path='/data/flowers', size=(64, 64))"
    dataset.name = "arrays(path='/data/mine.npz')"

and load into an :class:`~gnj.data.datasets.InMemoryData`, so they go through the same in-memory
pipeline as the built-in sets: batch of step ``s`` a function of ``(seed, s)`` (exact resume),
hosts reading disjoint slices, augmentation (``config.dataset.augment``) and normalisation on the
device. Every process loads the whole set (it must fit in host memory; larger sets want a TFDS
builder and a streaming source such as ``gnj/data/imagenet.py``).

``image_folder(path, size=None, test_fraction=0.2, split_seed=0, channels=None)``
  ``path/<class>/<image>``, classes numbered in sorted name order (as torchvision's
  ``ImageFolder``). If ``path/train`` and ``path/test`` both exist they are the splits (the test
  classes must be train classes); otherwise ``test_fraction`` of each class (at least one image
  when the fraction is > 0) is held out, chosen by a permutation seeded with ``split_seed`` (not
  the run's seed: the split stays fixed across seeds). Images are decoded with Pillow; ``size``
  (``(H, W)`` or one int for a square) resizes bilinearly, and without it every image must have
  the same size. ``channels`` (1 or 3) converts to grey or RGB; by default RGB if any image has
  colour, else grey.

``arrays(path, test_fraction=0.2, split_seed=0, num_classes=None)``
  An ``.npz`` with ``train_images``, ``train_labels``, ``test_images``, ``test_labels``, or with
  ``images`` and ``labels`` (split as above, without stratification). ``uint8`` images of shape
  ``(N, H, W)`` or ``(N, H, W, C)`` are images (scaled to [0, 1], normalised, augmentable);
  floating-point arrays of any shape ``(N, ...)`` are feature vectors used as they are (in at
  least float32; float64 files stay float64). Labels are
  integers in ``[0, num_classes)``; ``num_classes`` defaults to the largest label + 1.

Normalisation: images are normalised by the per-channel mean and standard deviation of the
training split (on the [0, 1] scale), unless the config sets ``dataset.mean`` / ``dataset.std``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from gnj.data.datasets import InMemoryData
from gnj.registry import DATASETS

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm")


# ----------------------------------------------------------------------------- shared checks


def _existing(path: str, what: str) -> str:
    if not isinstance(path, str) or not path:
        raise ValueError(f"{what}: give path='...' (got {path!r})")
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what}: path {path!r} does not exist")
    return path


def _check_fraction(test_fraction: float, what: str) -> None:
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ValueError(f"{what}: test_fraction must be in [0, 1), got {test_fraction!r}")


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` row indices: a seeded permutation, ``ceil(fraction·n)`` held out (at
    least one row when the fraction is > 0, at most ``n - 1``)."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(int(np.ceil(test_fraction * n)), n - 1) if test_fraction > 0 else 0
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 NHWC images on the [0, 1] scale (a
    channel with zero spread gets std 1, so normalising leaves it finite)."""
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    mean, std = x.mean(0), x.std(0)
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def _in_memory(train_x, train_y, test_x, test_y, num_classes: int, is_image: bool
               ) -> InMemoryData:
    if is_image:
        mean, std = channel_stats(train_x)
    else:
        mean, std = np.zeros(1, np.float32), np.ones(1, np.float32)
    return InMemoryData(train_x, train_y.astype(np.int32), test_x, test_y.astype(np.int32),
                        int(num_classes), mean, std, is_image)


# ----------------------------------------------------------------------------- image folders


def _normalise_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and s > 0 for s in size)):
        raise ValueError(f"image_folder: size must be a positive int or (height, width), "
                         f"got {size!r}")
    return int(size[0]), int(size[1])


def _class_dirs(root: str) -> list[str]:
    return sorted(d for d in os.listdir(root)
                  if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))


def _image_files(root: str, classes: list[str]) -> list[tuple[str, int]]:
    """:func:`_list_files`, refusing a folder that holds none."""
    files = _list_files(root, classes)
    if not files:
        raise ValueError(f"image_folder: no image files under {root!r}; expected "
                         f"{root}/<class>/<image> with classes among {classes}")
    return files


def _list_files(root: str, classes: list[str]) -> list[tuple[str, int]]:
    """``(file, label)`` of every non-hidden file under ``root/<class>/`` (label: the class's
    index in ``classes``; missing class folders are skipped), in sorted order."""
    files = []
    for label, name in enumerate(classes):
        directory = os.path.join(root, name)
        if not os.path.isdir(directory):
            continue
        for f in sorted(os.listdir(directory)):
            full = os.path.join(directory, f)
            if not f.startswith(".") and os.path.isfile(full):
                files.append((full, label))
    return files


def _decode(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"image_folder: {path!r} is not a readable image ({e}); the class "
                         f"folders may hold only images ({', '.join(IMAGE_EXTENSIONS)})"
                         ) from None


def _to_array(images: list, paths: list[str], size: tuple[int, int] | None,
              channels: int) -> np.ndarray:
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    out = []
    for img, path in zip(images, paths):
        img = img.convert(mode)
        if size is not None:
            img = img.resize((size[1], size[0]), Image.BILINEAR)  # PIL takes (width, height)
        elif img.size != images[0].size:
            raise ValueError(
                f"image_folder: images differ in size: {paths[0]!r} is {images[0].size[1]}x"
                f"{images[0].size[0]} but {path!r} is {img.size[1]}x{img.size[0]} (HxW); pass "
                f"size=(H, W) in the dataset spec to resize them all")
        a = np.asarray(img, np.uint8)
        out.append(a[..., None] if a.ndim == 2 else a)
    return np.stack(out)


def load_image_folder(path: str, size: int | Sequence[int] | None = None,
                      test_fraction: float = 0.2, split_seed: int = 0,
                      channels: int | None = None) -> InMemoryData:
    """A directory of ``<class>/<image>`` files (module docstring) as in-memory uint8 NHWC."""
    root = _existing(path, "image_folder")
    if not os.path.isdir(root):
        raise ValueError(f"image_folder: {root!r} is not a directory of class folders")
    size = _normalise_size(size)
    _check_fraction(test_fraction, "image_folder")
    if channels not in (None, 1, 3):
        raise ValueError(f"image_folder: channels must be 1, 3 or None, got {channels!r}")
    presplit = all(os.path.isdir(os.path.join(root, s)) for s in ("train", "test"))
    train_root = os.path.join(root, "train") if presplit else root
    classes = _class_dirs(train_root)
    if not classes:
        raise ValueError(f"image_folder: {train_root!r} has no class folders; expected "
                         f"{train_root}/<class>/<image> (or train/ and test/ holding those)")
    files = _image_files(train_root, classes)
    test_files: list[tuple[str, int]] = []
    if presplit:
        test_root = os.path.join(root, "test")
        extra = sorted(set(_class_dirs(test_root)) - set(classes))
        if extra:
            raise ValueError(f"image_folder: {test_root!r} has classes {extra} that "
                             f"{train_root!r} lacks; valid classes: {classes}")
        test_files = _image_files(test_root, classes)
    all_files = files + test_files
    decoded = [_decode(f) for f, _ in all_files]
    if channels is None:
        channels = 3 if any(img.mode not in ("L", "1", "I", "I;16", "F") for img in decoded) else 1
    x = _to_array(decoded, [f for f, _ in all_files], size, channels)
    y = np.array([label for _, label in all_files], np.int32)
    if presplit:
        n = len(files)
        return _in_memory(x[:n], y[:n], x[n:], y[n:], len(classes), True)
    train_rows, test_rows = [], []
    for label in range(len(classes)):  # stratified: every class keeps its share in both splits
        rows = np.flatnonzero(y == label)
        tr, te = _split(len(rows), test_fraction, split_seed + label)
        train_rows.append(rows[tr])
        test_rows.append(rows[te])
    tr, te = np.concatenate(train_rows), np.concatenate(test_rows)
    if len(te) == 0:
        raise ValueError(f"image_folder: test_fraction={test_fraction} leaves no test images in "
                         f"{root!r}; use a fraction > 0 or train/ and test/ folders")
    return _in_memory(x[tr], y[tr], x[te], y[te], len(classes), True)


# ----------------------------------------------------------------------------- npz arrays


def _check_labels(labels: np.ndarray, n: int, num_classes: int, where: str) -> None:
    if labels.shape != (n,):
        raise ValueError(f"arrays: {where} labels have shape {labels.shape}; expected ({n},), "
                         f"one integer label per image")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"arrays: {where} labels have dtype {labels.dtype}; expected integers")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(f"arrays: {where} label {labels[bad][0]} (row {np.flatnonzero(bad)[0]}) "
                         f"is out of range; valid labels are 0 .. {num_classes - 1}")


def _as_examples(x: np.ndarray, where: str) -> tuple[np.ndarray, bool]:
    """``(x, is_image)``: uint8 images as NHWC, floating features as they are."""
    if x.dtype == np.uint8:
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise ValueError(f"arrays: {where} images have shape {x.shape}; uint8 images must be "
                             f"(N, H, W) or (N, H, W, C)")
        return x, True
    if np.issubdtype(x.dtype, np.floating) and x.ndim >= 2:  # float64 stays (float64 runs)
        return x.astype(np.promote_types(x.dtype, np.float32)), False
    raise ValueError(f"arrays: {where} images have dtype {x.dtype} and shape {x.shape}; expected "
                     f"uint8 images (N, H, W[, C]) or floating-point features (N, ...)")


def load_arrays(path: str, test_fraction: float = 0.2, split_seed: int = 0,
                num_classes: int | None = None) -> InMemoryData:
    """An ``.npz`` of images and labels (module docstring) as in-memory data."""
    path = _existing(path, "arrays")
    _check_fraction(test_fraction, "arrays")
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    split_keys = ("train_images", "train_labels", "test_images", "test_labels")
    if all(k in arrays for k in split_keys):
        train_x, train_y, test_x, test_y = (arrays[k] for k in split_keys)
    elif "images" in arrays and "labels" in arrays:
        x, y = arrays["images"], arrays["labels"]
        if len(x) != len(y):
            raise ValueError(f"arrays: {path!r} has {len(x)} images but {len(y)} labels")
        tr, te = _split(len(x), test_fraction, split_seed)
        if len(te) == 0:
            raise ValueError(f"arrays: test_fraction={test_fraction} leaves no test examples; "
                             f"use a fraction > 0 or store test_images / test_labels")
        train_x, train_y, test_x, test_y = x[tr], y[tr], x[te], y[te]
    else:
        raise ValueError(f"arrays: {path!r} has keys {sorted(arrays)}; expected 'images' and "
                         f"'labels', or {', '.join(repr(k) for k in split_keys)}")
    train_x, is_image = _as_examples(train_x, "train")
    test_x, test_is_image = _as_examples(test_x, "test")
    if is_image != test_is_image or train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(f"arrays: train examples {train_x.shape[1:]} {train_x.dtype} and test "
                         f"examples {test_x.shape[1:]} {test_x.dtype} differ in shape or kind")
    if num_classes is None:
        for labels, where in ((train_y, "train"), (test_y, "test")):
            if not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"arrays: {where} labels have dtype {labels.dtype}; "
                                 f"expected integers")
        num_classes = int(max(train_y.max(initial=0), test_y.max(initial=0))) + 1
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"arrays: num_classes must be a positive int, got {num_classes!r}")
    _check_labels(train_y, len(train_x), num_classes, "train")
    _check_labels(test_y, len(test_x), num_classes, "test")
    if len(train_x) == 0 or len(test_x) == 0:
        raise ValueError(f"arrays: {path!r} has an empty split ({len(train_x)} train, "
                         f"{len(test_x)} test examples)")
    return _in_memory(train_x, train_y, test_x, test_y, num_classes, is_image)


# ----------------------------------------------------------------------------- registration


def _load(loader, what: str, kwargs: dict[str, Any]) -> InMemoryData:
    """``loader(**kwargs)``, or a ValueError naming the spec and the valid options."""
    params = list(inspect.signature(loader).parameters)
    unknown = sorted(set(kwargs) - set(params))
    if unknown or "path" not in kwargs:
        problem = f"unknown option(s) {unknown}" if unknown else "path is required"
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ValueError(f"dataset {what}({args}): {problem}; valid options: {', '.join(params)}")
    return loader(**kwargs)


def image_folder(config: Any, **kwargs: Any):
    """``dataset.name="image_folder(path=..., ...)"`` → an in-memory source."""
    from gnj.data.source import in_memory_source

    return in_memory_source(config, _load(load_image_folder, "image_folder", kwargs))


def arrays(config: Any, **kwargs: Any):
    """``dataset.name="arrays(path=....npz, ...)"`` → an in-memory source."""
    from gnj.data.source import in_memory_source

    return in_memory_source(config, _load(load_arrays, "arrays", kwargs))


for _name, _factory in (("image_folder", image_folder), ("arrays", arrays)):
    if _name not in DATASETS:
        DATASETS.register(_name)(_factory)
