"""TFDS builders for datasets that need no download: they are generated or read from files that
ship with installed packages, so ``download_and_prepare()`` works offline.

- ``gnj_digits``: scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes), a
  real image set that makes the default config run anywhere. Pixel values 0–16 are scaled to
  uint8 0–255 (×16, 256 clipped to 255). Fixed split: 1,437 train / 360 test (seeded shuffle).
- ``nn_mass_linear`` / ``nn_mass_circle``: the NN-Mass synthetic 2-D sets (Bhardwaj et al.,
  ``dataset.py``; REFERENCE.md §4.7): 12,000 train / 1,200 test points, 120 sub-bands on [0, 100],
  generated band by band. ``linear``: x = (u, u) with u uniform in the band. ``circle``: radius
  ~ N(band centre, band width/2) truncated to the band, angle uniform. Each example stores its
  generation ``index``; the label is ``⌊index·num_seg/N⌋ mod 2`` (alternating segments in
  generation order), computed at load time so one build serves every ``num_seg``.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

NUM_BANDS = 120
SYNTHETIC_SIZES = {"train": 12_000, "test": 1_200}


class GnjDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8×8 digits as a TFDS dataset."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 1)),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
            description="scikit-learn load_digits (UCI optdigits test set), 8x8 grey images.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.clip(digits.images * 16.0, 0, 255).astype(np.uint8)[..., None]
        labels = digits.target.astype(np.int64)
        order = np.random.default_rng(0).permutation(len(labels))
        n_test = 360
        test, train = order[:n_test], order[n_test:]
        return {
            "train": self._generate_examples(images[train], labels[train]),
            "test": self._generate_examples(images[test], labels[test]),
        }

    def _generate_examples(self, images, labels):
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image, "label": int(label)}


def synthetic_points(kind: str, n: int, seed: int) -> np.ndarray:
    """(n, 2) float32 points of the NN-Mass ``linear`` or ``circle`` set, band by band."""
    if kind not in ("linear", "circle"):
        raise ValueError(f"synthetic dataset kind {kind!r}; valid: linear, circle")
    if n % NUM_BANDS:
        raise ValueError(f"synthetic set size {n} must be a multiple of {NUM_BANDS}")
    rng = np.random.default_rng(seed)
    per_band = n // NUM_BANDS
    width = 100.0 / NUM_BANDS
    lo = np.repeat(np.arange(NUM_BANDS) * width, per_band)
    if kind == "linear":
        u = lo + rng.uniform(0.0, width, size=n)
        return np.stack([u, u], axis=1).astype(np.float32)
    centre = lo + width / 2
    radius = rng.normal(centre, width / 2)
    outside = (radius < lo) | (radius >= lo + width)
    while outside.any():  # truncate to the band by redrawing
        radius[outside] = rng.normal(centre[outside], width / 2)
        outside = (radius < lo) | (radius >= lo + width)
    angle = rng.uniform(0.0, 2 * np.pi, size=n)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).astype(np.float32)


def segment_labels(index: np.ndarray, total: int, num_seg: int) -> np.ndarray:
    """Labels of the synthetic sets: ``⌊index·num_seg/total⌋ mod 2``."""
    if num_seg < 1:
        raise ValueError(f"num_seg must be ≥ 1, got {num_seg}")
    return ((index.astype(np.int64) * num_seg) // total) % 2


class _NNMassSynthetic(tfds.core.GeneratorBasedBuilder):
    KIND = ""
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "point": tfds.features.Tensor(shape=(2,), dtype=np.float32),
                "index": np.int64,
            }),
            description=f"NN-Mass synthetic '{self.KIND}' set (Bhardwaj et al. 2021).",
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split, n, seed)
                for (split, n), seed in zip(SYNTHETIC_SIZES.items(), (1, 2))}

    def _generate_examples(self, split, n, seed):
        del split
        for i, point in enumerate(synthetic_points(self.KIND, n, seed)):
            yield i, {"point": point, "index": i}


class NnMassLinear(_NNMassSynthetic):
    KIND = "linear"


class NnMassCircle(_NNMassSynthetic):
    KIND = "circle"
