"""TFDS builders for datasets that need no download: they are generated or read from files that
ship with installed packages, so ``download_and_prepare()`` works offline.

- :class:`OfflineBuilder`: the base of such a builder (version, info from class attributes).
- ``gnj_digits``: scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes), a
  real image set that makes the default config run anywhere. Pixel values 0–16 are scaled to
  uint8 0–255 (×16, 256 clipped to 255). Fixed split: 1,437 train / 360 test (seeded shuffle).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow_datasets as tfds


class OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A locally generated TFDS set: subclasses set ``FEATURES`` (a dict for
    ``tfds.features.FeaturesDict``), ``DESCRIPTION``, optionally ``SUPERVISED_KEYS``, and write
    ``_split_generators``."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    FEATURES: dict[str, Any] = {}
    SUPERVISED_KEYS: tuple[str, str] | None = None
    DESCRIPTION = ""

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict(dict(self.FEATURES)),
            supervised_keys=self.SUPERVISED_KEYS, description=self.DESCRIPTION)


class GnjDigits(OfflineBuilder):
    """scikit-learn's 8×8 digits as a TFDS dataset."""

    FEATURES = {"image": tfds.features.Image(shape=(8, 8, 1)),
                "label": tfds.features.ClassLabel(num_classes=10)}
    SUPERVISED_KEYS = ("image", "label")
    DESCRIPTION = "scikit-learn load_digits (UCI optdigits test set), 8x8 grey images."

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
