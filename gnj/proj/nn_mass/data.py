"""The synthetic 2-D sets of the NN-Mass MLP experiments, registered as DATASETS
``nn_mass_linear`` / ``nn_mass_circle`` (docs/proj/nn_mass.md#synthetic-datasets).

12,000 train / 1,200 test points in 120 sub-bands of [0, 100], generated band by band.
``linear``: x = (u, u) with u uniform in the band. ``circle``: radius ~ N(band centre, band
width/2) truncated to the band, angle uniform. Each example stores its generation ``index``; the
label is ``⌊index·num_seg/N⌋ mod 2`` (alternating segments in generation order), computed at load
time (``DatasetSpec.relabel``, ``config.dataset.num_seg``) so one build serves every ``num_seg``.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from gnj.data.builders import OfflineBuilder
from gnj.data.datasets import DatasetSpec
from gnj.registry import DATASETS

NUM_BANDS = 120
SYNTHETIC_SIZES = {"train": 12_000, "test": 1_200}


def synthetic_points(kind: str, n: int, seed: int) -> np.ndarray:
    """(n, 2) float32 points of the ``linear`` or ``circle`` set, band by band."""
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


def segment_labels(index: np.ndarray, num_seg: int) -> np.ndarray:
    """Labels of the synthetic sets: ``⌊index·num_seg/total⌋ mod 2`` (total = ``len(index)``)."""
    if num_seg < 1:
        raise ValueError(f"num_seg must be ≥ 1, got {num_seg}")
    return ((index.astype(np.int64) * num_seg) // len(index)) % 2


class _Synthetic(OfflineBuilder, skip_registration=True):
    KIND = ""
    FEATURES = {"point": tfds.features.Tensor(shape=(2,), dtype=np.float32), "index": np.int64}

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split, n, seed)
                for (split, n), seed in zip(SYNTHETIC_SIZES.items(), (1, 2))}

    def _generate_examples(self, split, n, seed):
        del split
        for i, point in enumerate(synthetic_points(self.KIND, n, seed)):
            yield i, {"point": point, "index": i}


class NnMassLinear(_Synthetic):
    KIND = "linear"
    DESCRIPTION = "NN-Mass synthetic 'linear' set (Bhardwaj et al. 2021)."


class NnMassCircle(_Synthetic):
    KIND = "circle"
    DESCRIPTION = "NN-Mass synthetic 'circle' set (Bhardwaj et al. 2021)."


for _name, _builder in (("nn_mass_linear", NnMassLinear), ("nn_mass_circle", NnMassCircle)):
    DATASETS.register(_name)(DatasetSpec(_name, 2, image_key="point", label_key="index",
                                         builder=_builder, is_image=False,
                                         relabel=segment_labels))
