"""Data: TFDS datasets loaded into memory, offline builders, and the step-indexed pipeline."""

from gnj.data.datasets import DatasetNotPreparedError, InMemoryData, load  # noqa: F401
from gnj.data.pipeline import Augment, TrainBatches, eval_batches, preprocess  # noqa: F401
from gnj.data.source import DataSource, build  # noqa: F401
