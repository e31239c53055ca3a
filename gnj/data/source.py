"""The data source a training run reads: what ``train.py`` needs and nothing else.

``build(config)`` returns a :class:`DataSource` for ``config.dataset``. A dataset registered in
``DATASETS`` as a :class:`~gnj.data.datasets.DatasetSpec` is loaded into memory
(:class:`InMemorySource`); an entry that is a callable ``factory(config) -> DataSource`` builds its
own source (e.g. streaming ImageNet). Either way the host-local batch of step ``s`` depends only on
``(seed, s)``, so a resumed run replays exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from gnj.data import datasets, pipeline
from gnj.registry import DATASETS, parse_spec


class DataSource(Protocol):
    num_classes: int
    input_shape: tuple[int, ...]
    steps_per_epoch: int

    def train_batches(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
        """Host-local training batches for steps ``start_step, start_step + 1, ...``."""

    def eval_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """Host-local eval batches with a ``mask`` (0 for padding)."""

    def preprocess(self, x: jax.Array, key: jax.Array | None) -> jax.Array:
        """On-device preprocessing (jittable); augments when ``key`` is given."""


@dataclasses.dataclass
class InMemorySource:
    """A small dataset held in host memory, batched by step, augmented on device."""

    data: datasets.InMemoryData
    batches: pipeline.TrainBatches
    eval_batch_size: int
    augment: pipeline.Augment | None

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.data.input_shape

    @property
    def steps_per_epoch(self) -> int:
        return self.batches.steps_per_epoch

    def train_batches(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
        step = start_step
        while True:
            yield self.batches.local_batch(step)
            step += 1

    def eval_batches(self) -> Iterator[dict[str, np.ndarray]]:
        return pipeline.eval_batches(self.data, self.eval_batch_size, jax.process_index(),
                                     jax.process_count())

    def preprocess(self, x: jax.Array, key: jax.Array | None) -> jax.Array:
        mean, std = jnp.asarray(self.data.mean), jnp.asarray(self.data.std)
        return pipeline.preprocess(x, mean, std, self.data.is_image,
                                   self.augment if key is not None else None, key)


def dataset_entry(name: str) -> tuple[Any, dict[str, Any]]:
    """``(registry entry, inline arguments)`` of ``config.dataset.name``: a registered name as
    written (``"imagenet_resized/32x32"``), or a spec with arguments
    (``"image_folder(path='/data/x', size=32)"``)."""
    if name in DATASETS:
        return DATASETS.get(name), {}
    entry_name, kwargs = parse_spec(name)
    entry = DATASETS.get(entry_name)
    if not kwargs:
        return entry, kwargs
    if isinstance(entry, datasets.DatasetSpec):
        raise ValueError(f"dataset {entry_name!r} takes no arguments (got {sorted(kwargs)})")
    try:
        inspect.signature(entry).bind(None, **kwargs)
    except TypeError as e:
        raise ValueError(f"dataset spec {name!r}: {e}; see the docstring of {entry.__module__}."
                         f"{entry.__name__} for its options") from None
    return entry, kwargs


def in_memory_source(config: Any, data: datasets.InMemoryData) -> InMemorySource:
    """``data`` batched by step for this host, with ``config.dataset``'s augmentation and (if
    set) its own normalisation constants."""
    if config.dataset.get("mean", ()):  # the config's own normalisation constants
        data = dataclasses.replace(data, mean=np.asarray(config.dataset.mean, np.float32),
                                   std=np.asarray(config.dataset.std, np.float32))
    aug_cfg = dict(config.dataset.get("augment", {}) or {})
    augment = pipeline.Augment(**aug_cfg) if aug_cfg else None
    batches = pipeline.TrainBatches(data, config.batch_size, config.seed, jax.process_index(),
                                    jax.process_count())
    return InMemorySource(data, batches, config.eval_batch_size, augment)


def build(config: Any) -> DataSource:
    """The data source of ``config.dataset`` for this host."""
    entry, kwargs = dataset_entry(config.dataset.name)
    if callable(entry) and not isinstance(entry, datasets.DatasetSpec):
        return entry(config, **kwargs)
    data = datasets.load(parse_spec(config.dataset.name)[0], config.dataset.get("data_dir") or None,
                         num_seg=config.dataset.get("num_seg", 2))
    return in_memory_source(config, data)


Factory = Callable[[Any], DataSource]
