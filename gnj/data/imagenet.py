"""Streaming ImageNet (and its downsampled versions) as a :class:`~gnj.data.source.DataSource`.

Registered in ``DATASETS`` as factories ``factory(config) -> DataSource``:

- ``imagenet2012``: TFDS ``imagenet2012`` (manual download of the ILSVRC-2012 tars, then
  ``tfds build imagenet2012 --manual_dir=...``). Training: torchvision's RandomResizedCrop
  (area 8–100 %, aspect 3/4–4/3, 10 attempts, else the whole image) resized bilinearly to
  ``image_size`` (224) and a random horizontal flip; eval: resize the shorter side to
  ``eval_resize`` (256) and take the central ``image_size`` square (the torchvision ImageNet
  recipe).
  Decoding, crops and flips run on the host in tf.data; the device only normalises.
- ``imagenet_resized/{8x8,16x16,32x32,64x64}``: TFDS ``imagenet_resized`` (labelled, already
  small). Streamed the same way, augmented on the device with ``config.dataset.augment``
  (pad-crop, flip; e.g. a reflect-pad-4 crop on 32×32).
- ``downsampled_imagenet/32x32`` and ``/64x64`` have no labels in TFDS: they raise a ValueError
  pointing at ``imagenet_resized``.
- ``digits_32x32``: scikit-learn's 8×8 digits upsampled ×4 (nearest) in memory — the offline
  stand-in that lets ``runlocal`` configs of models needing 32×32 inputs (MobileNet v1, the CIFAR
  DenseNet) run in seconds.

Determinism and resume: epoch ``e`` reads the host's shard (``tfds.even_splits`` over
``jax.process_count()`` hosts) with file order and shuffle buffer seeded by ``(seed, e)``; example
``i`` of the epoch gets its crop/flip from the stateless seed ``(seed, e, i)``. The batch of step
``s`` is therefore a function of ``(seed, s)``; resuming at ``s`` skips ``s mod steps_per_epoch``
batches of *undecoded* records, so resuming costs no decoding. Every host yields
``steps_per_epoch = ⌊⌊N/hosts⌋ / local_batch⌋`` batches per epoch and the same number of eval
batches (the last padded and masked), so the hosts stay in lock-step.

Config keys (``config.dataset``): ``name``, ``data_dir``, ``mean`` / ``std`` (default ImageNet's),
``image_size`` (224), ``eval_resize`` (256), ``shuffle_buffer`` (16384),
``num_train_examples`` / ``num_eval_examples`` (only needed when TFDS has no split metadata,
e.g. under ``tfds.testing.mock_data``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gnj.data import datasets, pipeline
from gnj.registry import DATASETS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLIT_SIZES = {"train": 1_281_167, "validation": 50_000}
CROP_AREA = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


@dataclasses.dataclass(frozen=True)
class StreamSpec:
    """One streamed TFDS image-classification set."""

    tfds_name: str
    num_classes: int = 1000
    native_size: int | None = None  # None: full-size JPEGs (random-resized-crop on the host)
    train_split: str = "train"
    eval_split: str = "validation"


def _dataset_cfg(config: Any, key: str, default: Any) -> Any:
    value = config.dataset.get(key, default)
    return default if value in (None, (), "", 0) else value


class StreamingSource:
    """A TFDS image set read with tf.data: host-local numpy batches by step."""

    def __init__(self, config: Any, spec: StreamSpec):
        import tensorflow_datasets as tfds

        self.spec, self.seed = spec, int(config.seed)
        self.data_dir = config.dataset.get("data_dir") or datasets.default_data_dir()
        self.builder = tfds.builder(spec.tfds_name, data_dir=self.data_dir)
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        for what, b in (("batch_size", config.batch_size),
                        ("eval_batch_size", config.eval_batch_size)):
            if b % self.process_count:
                raise ValueError(f"{spec.tfds_name}: {what} {b} is not divisible by the "
                                 f"{self.process_count} hosts")
        self.local_batch = config.batch_size // self.process_count
        self.local_eval_batch = config.eval_batch_size // self.process_count
        self.image_size = int(spec.native_size or _dataset_cfg(config, "image_size", 224))
        self.eval_resize = int(_dataset_cfg(config, "eval_resize", 256))
        self.shuffle_buffer = int(_dataset_cfg(config, "shuffle_buffer", 16_384))
        self.num_train = self._num_examples(config, spec.train_split, "num_train_examples")
        self.num_eval = self._num_examples(config, spec.eval_split, "num_eval_examples")
        per_host = self.num_train // self.process_count
        self.steps_per_epoch = per_host // self.local_batch
        if self.steps_per_epoch < 1:
            raise ValueError(f"{spec.tfds_name}: {per_host} training examples per host are fewer "
                             f"than the local batch {self.local_batch}")
        self.mean = np.asarray(_dataset_cfg(config, "mean", IMAGENET_MEAN), np.float32) * 255.0
        self.std = np.asarray(_dataset_cfg(config, "std", IMAGENET_STD), np.float32) * 255.0
        aug = dict(config.dataset.get("augment", {}) or {})
        self.augment = pipeline.Augment(**aug) if spec.native_size and aug else None
        self.num_classes = spec.num_classes
        self.input_shape = (self.image_size, self.image_size, 3)

    # ------------------------------------------------------------------ sizes and splits

    def _num_examples(self, config: Any, split: str, key: str) -> int:
        override = config.dataset.get(key, 0)
        if override:
            return int(override)
        try:
            return int(self.builder.info.splits[split].num_examples)
        except KeyError:
            if split in SPLIT_SIZES:
                return SPLIT_SIZES[split]
            raise

    def _host_split(self, split: str) -> str:
        import tensorflow_datasets as tfds

        if self.process_count == 1:
            return split
        return tfds.even_splits(split, n=self.process_count)[self.process_index]

    def _read(self, split: str, shuffle_seed: int | None):
        import tensorflow_datasets as tfds

        decoders = None if self.spec.native_size else {"image": tfds.decode.SkipDecoding()}
        read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False)
        try:
            return self.builder.as_dataset(split=self._host_split(split),
                                           shuffle_files=shuffle_seed is not None,
                                           read_config=read_config, decoders=decoders)
        except Exception as e:  # TFDS raises AssertionError / FileNotFoundError when unprepared
            raise datasets.DatasetNotPreparedError(
                f"TFDS dataset {self.spec.tfds_name!r} is not prepared in {self.data_dir!r}. "
                + ("Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar by hand, then "
                   f"run: tfds build imagenet2012 --manual_dir=<dir with the tars> "
                   f"--data_dir={self.data_dir}" if self.spec.tfds_name == "imagenet2012" else
                   f"Run: tfds build {self.spec.tfds_name} --data_dir={self.data_dir}")
                + " (or point --config.dataset.data_dir at a prepared data dir).") from e

    # ------------------------------------------------------------------ train

    def _epoch_seed(self, epoch: int) -> int:
        return int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0] >> 1)

    def _train_epoch(self, epoch: int, skip_batches: int):
        import tensorflow as tf

        seed = self._epoch_seed(epoch)
        ds = self._read(self.spec.train_split, seed)
        ds = ds.shuffle(self.shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
        ds = ds.enumerate().skip(skip_batches * self.local_batch)

        def prepare(i, ex):
            key = tf.stack([tf.constant(seed % (2**31), tf.int64), i])
            return {"image": self._train_image(ex["image"], key),
                    "label": tf.cast(ex["label"], tf.int32)}

        ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(self.local_batch, drop_remainder=True)
        ds = ds.take(self.steps_per_epoch - skip_batches)
        return ds.prefetch(tf.data.AUTOTUNE)

    def _train_image(self, image, key):
        import tensorflow as tf

        if self.spec.native_size:
            return image  # augmented on the device
        img = tf.io.decode_image(image, channels=3, expand_animations=False)
        box_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(img), bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
            seed=box_key, min_object_covered=0.0, aspect_ratio_range=CROP_RATIO,
            area_range=CROP_AREA, max_attempts=10, use_image_if_no_bounding_boxes=True)
        img = tf.slice(img, begin, size)
        img = tf.image.resize(img, (self.image_size, self.image_size), "bilinear",
                              antialias=False)
        img = tf.image.stateless_random_flip_left_right(img, flip_key)
        return tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)

    def train_batches(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
        import tensorflow_datasets as tfds

        epoch, offset = divmod(start_step, self.steps_per_epoch)
        while True:
            yield from tfds.as_numpy(self._train_epoch(epoch, offset))
            epoch, offset = epoch + 1, 0

    # ------------------------------------------------------------------ eval

    def _eval_image(self, image):
        import tensorflow as tf

        if self.spec.native_size:
            return image
        img = tf.io.decode_image(image, channels=3, expand_animations=False)
        h, w = tf.shape(img)[0], tf.shape(img)[1]
        scale = tf.cast(self.eval_resize, tf.float32) / tf.cast(tf.minimum(h, w), tf.float32)
        nh = tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32)
        nw = tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32)
        img = tf.image.resize(img, (nh, nw), "bilinear", antialias=True)
        top, left = (nh - self.image_size) // 2, (nw - self.image_size) // 2
        img = img[top:top + self.image_size, left:left + self.image_size]
        img = tf.ensure_shape(img, (self.image_size, self.image_size, 3))
        return tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)

    def eval_batches(self) -> Iterator[dict[str, np.ndarray]]:
        import tensorflow as tf
        import tensorflow_datasets as tfds

        ds = self._read(self.spec.eval_split, None)
        ds = ds.map(lambda ex: {"image": self._eval_image(ex["image"]),
                                "label": tf.cast(ex["label"], tf.int32)},
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(self.local_eval_batch).prefetch(tf.data.AUTOTUNE)
        # every host yields the same number of batches: that of the largest shard
        num_batches = math.ceil(math.ceil(self.num_eval / self.process_count)
                                / self.local_eval_batch)
        done, last = 0, None
        for batch in tfds.as_numpy(ds):
            if done == num_batches:
                break
            last = batch
            yield _pad(batch, self.local_eval_batch)
            done += 1
        while done < num_batches and last is not None:  # shards shorter than the largest
            empty = _pad({k: v[:1] for k, v in last.items()}, self.local_eval_batch)
            empty["mask"][:] = 0.0
            yield empty
            done += 1

    # ------------------------------------------------------------------ device side

    def preprocess(self, x: jax.Array, key: jax.Array | None) -> jax.Array:
        """uint8 NHWC → (x − mean·255)/(std·255); downsampled sets also get the augmentation."""
        x = x.astype(pipeline.float_dtype(x))
        if self.augment is not None and key is not None:
            crop_key, flip_key = jax.random.split(key)
            if self.augment.crop_padding > 0:
                x = pipeline.random_crop(x, crop_key, self.augment.crop_padding,
                                         self.augment.pad_mode)
            if self.augment.flip:
                x = pipeline.random_flip(x, flip_key)
        return (x - jnp.asarray(self.mean)) / jnp.asarray(self.std)


def _pad(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pad a (last, short) eval batch to ``size`` rows; ``mask`` marks the real ones."""
    n = len(batch["label"])
    out = {k: np.concatenate([v, np.repeat(v[-1:], size - n, 0)]) if n < size else v
           for k, v in batch.items()}
    out["mask"] = (np.arange(size) < n).astype(np.float32)
    return out


def _stream_factory(spec: StreamSpec):
    def factory(config: Any) -> StreamingSource:
        return StreamingSource(config, spec)

    factory.__name__ = f"stream_{spec.tfds_name.replace('/', '_')}"
    return factory


def _unlabelled_factory(name: str):
    def factory(config: Any):
        size = name.rsplit("/", 1)[-1]
        raise ValueError(f"dataset {name!r} has no labels in TFDS (image only); for "
                         f"classification use 'imagenet_resized/{size}'")

    return factory


def digits_32x32(config: Any):
    """The 8×8 digits upsampled ×4 (nearest): an offline 32×32 set for runlocal configs."""
    from gnj.data.source import in_memory_source

    data = datasets.load("digits", config.dataset.get("data_dir") or None)
    up = lambda x: np.repeat(np.repeat(x, 4, axis=1), 4, axis=2)
    data = dataclasses.replace(data, train_x=up(data.train_x), test_x=up(data.test_x))
    return in_memory_source(config, data)


def _register() -> None:
    entries = {"imagenet2012": _stream_factory(StreamSpec("imagenet2012")),
               "digits_32x32": digits_32x32}
    for size in (8, 16, 32, 64):
        name = f"imagenet_resized/{size}x{size}"
        entries[name] = _stream_factory(StreamSpec(name, native_size=size))
    for size in (32, 64):
        entries[f"downsampled_imagenet/{size}x{size}"] = _unlabelled_factory(
            f"downsampled_imagenet/{size}x{size}")
    for name, factory in entries.items():
        if name not in DATASETS:
            DATASETS.register(name)(factory)


_register()
