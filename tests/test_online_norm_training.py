"""A ResNet-20 with norm="online" trains through the config system, and its loss falls like the
BatchNorm run's (same config, same data order)."""

import numpy as np
import pytest

from configs.online_norm import resnet as on_configs
from gnj import train
from gnj.metrics import read_jsonl


def _run(tfds_dir, tmp_path, mode):
    c = on_configs.get_config(f"digits,{mode}")
    c.dataset.data_dir = tfds_dir
    c.model.depth = 8
    c.num_epochs = 6.0  # 66 steps
    c.log_every_steps, c.eval_every_steps = 11, 66
    c.quiet = True
    result = train.train_and_evaluate(c, str(tmp_path / mode))
    losses = [r["train/loss"] for r in read_jsonl(str(tmp_path / mode / "metrics.jsonl"))]
    return result, np.array(losses)


@pytest.mark.slow  # end-to-end run: make test-all
def test_online_norm_resnet_trains_like_batchnorm(tfds_dir, tmp_path):
    on, on_losses = _run(tfds_dir, tmp_path, "online")
    bn, bn_losses = _run(tfds_dir, tmp_path, "batch")
    assert on_losses[-1] < 0.25 * on_losses[0]
    assert on["eval/accuracy"] > 0.85
    # within a factor of two of BatchNorm's loss at the end, and above chance by far
    assert on_losses[-1] < 2 * bn_losses[-1] + 0.05


def test_online_norm_config_variants():
    assert len(on_configs.VARIANTS) == 18
    c = on_configs.get_config("cifar100,online,b32")
    assert "cifar100" in c.model.norm and c.batch_size == 32
    np.testing.assert_allclose(c.optim.momentum, 0.9 ** 0.25)
    import pytest

    with pytest.raises(ValueError, match="valid: cifar10,batch"):
        on_configs.get_config("mnist,online")
