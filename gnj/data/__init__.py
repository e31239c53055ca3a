"""Data: TFDS datasets loaded into memory, offline builders, and the step-indexed pipeline."""

from gnj.data import (
    imagenet,  # noqa: F401,E402  (registers imagenet2012, imagenet_resized/*, digits_32x32)
    user_data,  # noqa: F401,E402  (registers image_folder, arrays)
)
from gnj.data.datasets import DatasetNotPreparedError, InMemoryData, load  # noqa: F401
from gnj.data.pipeline import Augment, TrainBatches, eval_batches, preprocess  # noqa: F401
from gnj.data.source import DataSource, build  # noqa: F401
