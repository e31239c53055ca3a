"""Datasets by name (``gnj.registry.DATASETS``), loaded once into host memory from TFDS.

Each entry is a :class:`DatasetSpec`: the TFDS name, the per-channel mean/std used to normalise,
the class count, and for gnj's own offline builders the builder class (built on first use in the
TFDS data dir, no download). Real datasets (mnist, fashion_mnist, cifar10, cifar100) must be
prepared in the TFDS data dir; if not, :func:`load` says exactly how.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from gnj.registry import DATASETS


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to load and normalise one dataset."""

    tfds_name: str
    num_classes: int
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    image_key: str = "image"
    label_key: str = "label"
    builder: Any = None  # a local TFDS builder class (offline), or None for a TFDS catalogue set
    train_split: str = "train"
    test_split: str = "test"
    is_image: bool = True
    #: ``relabel(labels, num_seg)``: labels computed at load time from the stored ones (e.g. a
    #: generation index; ``config.dataset.num_seg``), or None to keep them
    relabel: Callable[[np.ndarray, int], np.ndarray] | None = None


@dataclasses.dataclass
class InMemoryData:
    """A whole dataset in host memory: uint8 NHWC images (or float features) and int32 labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    mean: np.ndarray
    std: np.ndarray
    is_image: bool

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


def _register(name: str, spec: DatasetSpec) -> None:
    DATASETS.register(name)(spec)


def _specs() -> None:
    from gnj.data import builders

    _register("digits", DatasetSpec("gnj_digits", 10, (0.3345,), (0.3770,),
                                     builder=builders.GnjDigits))
    _register("mnist", DatasetSpec("mnist", 10, (0.1307,), (0.3081,)))
    _register("fashion_mnist", DatasetSpec("fashion_mnist", 10, (0.2860,), (0.3530,)))
    _register("cifar10", DatasetSpec("cifar10", 10, (0.4914, 0.4822, 0.4465),
                                     (0.2470, 0.2435, 0.2616)))
    _register("cifar100", DatasetSpec("cifar100", 100, (0.5071, 0.4865, 0.4409),
                                      (0.2673, 0.2564, 0.2762)))


_specs()


def default_data_dir() -> str:
    """TFDS's data dir: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
    return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


class DatasetNotPreparedError(FileNotFoundError):
    """A TFDS dataset that must be downloaded is not in the data dir."""


def _not_prepared(spec: DatasetSpec, data_dir: str) -> DatasetNotPreparedError:
    return DatasetNotPreparedError(
        f"TFDS dataset {spec.tfds_name!r} is not prepared in data dir {data_dir!r}. "
        f"Prepare it once on a machine with internet access:\n"
        f"    tfds build {spec.tfds_name} --data_dir={data_dir}\n"
        f"(or python -c \"import tensorflow_datasets as tfds; "
        f"tfds.builder('{spec.tfds_name}', data_dir='{data_dir}').download_and_prepare()\"),"
        f" then copy {os.path.join(data_dir, spec.tfds_name)} here, or point "
        f"--config.dataset.data_dir (or $TFDS_DATA_DIR) at a directory that has it.")


def _builder(spec: DatasetSpec, data_dir: str):
    import tensorflow_datasets as tfds

    if spec.builder is not None:
        builder = spec.builder(data_dir=data_dir)
        if not builder.is_prepared():
            builder.download_and_prepare()  # generated locally, no network
        return builder
    return tfds.builder(spec.tfds_name, data_dir=data_dir)


def _read_split(builder, split: str, spec: DatasetSpec, shard: tuple[int, int] | None = None):
    """All examples of ``split`` as numpy arrays (iterating; ``batch_size=-1`` is avoided)."""
    import tensorflow_datasets as tfds

    if shard is not None:
        split = tfds.even_splits(split, n=shard[1])[shard[0]]
    try:
        ds = builder.as_dataset(split=split, batch_size=1024, shuffle_files=False)
    except Exception as e:  # TFDS raises AssertionError / FileNotFoundError when unprepared
        if not builder.is_prepared():
            raise _not_prepared(spec, str(builder.data_dir_root)) from e
        raise
    xs, ys = [], []
    for ex in tfds.as_numpy(ds):
        xs.append(np.asarray(ex[spec.image_key]))
        ys.append(np.asarray(ex[spec.label_key]))
    if not xs:
        raise ValueError(f"dataset {spec.tfds_name!r} split {split!r} is empty")
    return np.concatenate(xs), np.concatenate(ys)


def load(name: str, data_dir: str | None = None, num_seg: int = 2) -> InMemoryData:
    """Load dataset ``name`` into memory (each host loads the whole set; it is small).

    ``num_seg`` is passed to the spec's ``relabel`` (sets whose labels are computed at load time).
    """
    spec: DatasetSpec = DATASETS.get(name)
    data_dir = data_dir or default_data_dir()
    builder = _builder(spec, data_dir)
    train_x, train_y = _read_split(builder, spec.train_split, spec)
    test_x, test_y = _read_split(builder, spec.test_split, spec)
    if spec.relabel is not None:
        train_y, test_y = spec.relabel(train_y, num_seg), spec.relabel(test_y, num_seg)
    channels = train_x.shape[-1]
    mean = np.asarray(spec.mean or (0.0,) * channels, np.float32)
    std = np.asarray(spec.std or (1.0,) * channels, np.float32)
    return InMemoryData(train_x, train_y.astype(np.int32), test_x, test_y.astype(np.int32),
                        spec.num_classes, mean, std, spec.is_image)
