"""Batches of an in-memory dataset: the batch at step ``s`` depends only on ``(seed, s)``.

Host side (numpy, vectorised, no per-example Python): each epoch is a permutation drawn from
``default_rng([seed, epoch])``; step ``s`` takes rows ``[i·B, (i+1)·B)`` of epoch ``s // steps``
(the last partial batch is dropped, as in the references). Each host gathers only its own
contiguous slice of the global batch (hosts read disjoint shards), and
``jax.make_array_from_process_local_data`` assembles the global array sharded over ``'data'``.

Device side (inside the jitted step): :func:`preprocess` casts to float, applies the augmentation
(zero- or reflect-padded random crop, horizontal flip) with a key derived from ``(seed, step)``,
and normalises with the dataset's mean/std. Resuming at step ``s`` therefore replays exactly the
batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from gnj.data.datasets import InMemoryData


@dataclasses.dataclass(frozen=True)
class Augment:
    """Training augmentation: random crop after padding ``crop_padding``, random h-flip."""

    crop_padding: int = 0
    pad_mode: str = "constant"  # "constant" (zeros, torchvision default) or "reflect"
    flip: bool = False

    def __post_init__(self):
        if self.pad_mode not in ("constant", "reflect"):
            raise ValueError(f"augment pad_mode {self.pad_mode!r}; valid: constant, reflect")
        if self.crop_padding < 0:
            raise ValueError(f"augment crop_padding must be ≥ 0, got {self.crop_padding}")


def preprocess(x: jax.Array, mean: jax.Array, std: jax.Array, is_image: bool,
               augment: Augment | None = None, key: jax.Array | None = None) -> jax.Array:
    """uint8 NHWC → normalised float32, with the training augmentation when ``augment``.
    Floating input keeps its dtype (float64 under a float64 policy, ``gnj/precision.py``)."""
    x = x.astype(float_dtype(x))
    if not is_image:
        return x
    x = x / 255.0
    if augment is not None and key is not None:
        crop_key, flip_key = jax.random.split(key)
        if augment.crop_padding > 0:
            x = random_crop(x, crop_key, augment.crop_padding, augment.pad_mode)
        if augment.flip:
            x = random_flip(x, flip_key)
    return (x - mean) / std


def float_dtype(x: jax.Array) -> jnp.dtype:
    """``x``'s dtype if floating, else float32: the dtype preprocessing computes in."""
    return x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.dtype(jnp.float32)


def random_crop(x: jax.Array, key: jax.Array, padding: int, mode: str = "constant") -> jax.Array:
    """Pad H and W by ``padding`` and take a random H×W window per sample."""
    n, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode=mode)
    offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


def random_flip(x: jax.Array, key: jax.Array) -> jax.Array:
    """Flip each sample left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
    return jnp.where(flip, x[:, :, ::-1, :], x)


class TrainBatches:
    """Host-local slices of the global training batch at any step."""

    def __init__(self, data: InMemoryData, global_batch: int, seed: int,
                 process_index: int = 0, process_count: int = 1):
        n = len(data.train_y)
        if global_batch > n:
            raise ValueError(f"batch_size {global_batch} is larger than the training set ({n})")
        if global_batch % process_count:
            raise ValueError(
                f"batch_size {global_batch} is not divisible by the process count {process_count}")
        self.data, self.global_batch, self.seed = data, global_batch, seed
        self.steps_per_epoch = n // global_batch
        local = global_batch // process_count
        self._slice = slice(process_index * local, (process_index + 1) * local)
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> np.ndarray:
        """Global-batch row indices of step ``step`` (all hosts agree)."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm = rng.permutation(len(self.data.train_y))
            self._epoch = epoch
        return self._perm[i * self.global_batch:(i + 1) * self.global_batch]

    def local_batch(self, step: int) -> dict[str, np.ndarray]:
        rows = self.indices(step)[self._slice]
        return {"image": self.data.train_x[rows], "label": self.data.train_y[rows]}


def eval_batches(data: InMemoryData, global_batch: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """The whole test set in fixed-size batches; the last is padded and masked (``mask`` = 0)."""
    n = len(data.test_y)
    local = global_batch // process_count
    for start in range(0, n, global_batch):
        rows = np.arange(start, start + global_batch)
        mask = (rows < n).astype(np.float32)
        rows = np.minimum(rows, n - 1)[process_index * local:(process_index + 1) * local]
        yield {"image": data.test_x[rows], "label": data.test_y[rows],
               "mask": mask[process_index * local:(process_index + 1) * local]}


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
    """Run ``iterator`` in a background thread, ``size`` items ahead (overlaps host work)."""
    q: queue.Queue = queue.Queue(maxsize=size)
    sentinel = object()

    def worker():
        try:
            for item in iterator:
                q.put(item)
        except BaseException as e:  # surfaced in the consumer
            q.put(e)
        q.put(sentinel)

    threading.Thread(target=worker, daemon=True).start()
    while True:
        item = q.get()
        if item is sentinel:
            return
        if isinstance(item, BaseException):
            raise item
        yield item
