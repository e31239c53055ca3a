"""Elastic restore: a checkpoint written with N devices resumes with M ≠ N devices (or another
process count) and the run continues as an uninterrupted run of the new size does.

Runs of different sizes agree to float32 rounding (the sharded step computes the same global-batch
math, only reduction orders differ), so "continues as the new size would" is checked against an
uninterrupted run of the new size: losses of the resumed steps, final parameters, BatchNorm
statistics and optimizer state, to float32 tolerance. A wrong restore (fresh momentum or batch
statistics, another step's state) misses by orders of magnitude more.
"""

import json
import os

import numpy as np
import pytest

from configs import default
from gnj import train
from gnj.metrics import read_jsonl
from tests.conftest import run_python
from tests.multiprocess import restore_on_host, run_main
from tests.test_multiprocess import assert_states_close, resume_copy

STEPS = 6
OVERRIDES = {"num_steps": STEPS, "log_every_steps": 1, "eval_every_steps": STEPS,
             "checkpoint_every_steps": 3, "quiet": True}

# In a subprocess with 8 devices: the uninterrupted 8-device run, then the 1-device run's
# step-3 checkpoint resumed on 8 devices.
_EIGHT = r"""
import json, sys
from configs import default
from gnj import train
from tests.test_elastic import config
npz, full, resumed = sys.argv[1:]
train.train_and_evaluate(config(npz), full)
train.train_and_evaluate(config(npz), resumed)
"""


def config(npz: str):
    c = default.get_config("runlocal")
    c.dataset.name = f"arrays(path={npz!r})"
    c.model = default.ml_collections.ConfigDict(dict(name="mlp", hidden=(32, 32), norm="batch"))
    for k, v in OVERRIDES.items():
        setattr(c, k, v)
    return c


def _assert_continues_like(resumed: str, reference: str) -> None:
    got, ref = (read_jsonl(os.path.join(w, "metrics.jsonl")) for w in (resumed, reference))
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    for key in ("train/loss", "train/grad_norm"):
        np.testing.assert_allclose([r[key] for r in got[3:]], [r[key] for r in ref[3:]],
                                   rtol=1e-5)
    np.testing.assert_allclose(got[-1]["eval/loss"], ref[-1]["eval/loss"], rtol=1e-5)
    state, expected = restore_on_host(resumed, STEPS), restore_on_host(reference, STEPS)
    assert "batch_stats" in state["model_state"]
    assert_states_close(state, expected)


@pytest.mark.slow  # end-to-end run: make test-all
def test_eight_devices_to_one_and_one_to_eight(digits_npz, tmp_path):
    one = str(tmp_path / "one")  # the test process has one CPU device
    train.train_and_evaluate(config(digits_npz), one)
    eight = str(tmp_path / "eight")
    one_on_eight = resume_copy(one, str(tmp_path / "one_on_eight"), 3)
    run_python(["-c", _EIGHT, digits_npz, eight, one_on_eight], devices=8)
    assert json.load(open(os.path.join(eight, "config.json")))["batch_size"] == 32
    eight_on_one = resume_copy(eight, str(tmp_path / "eight_on_one"), 3)
    train.train_and_evaluate(config(digits_npz), eight_on_one)
    _assert_continues_like(eight_on_one, one)
    _assert_continues_like(one_on_eight, eight)


def _main_args(workdir, npz):
    return ["--config=configs/default.py:runlocal", f"--workdir={workdir}",
            f"--config.dataset.name=arrays(path={npz!r})", "--config.model.width=8",
            *(f"--config.{k}={v}" for k, v in OVERRIDES.items())]


@pytest.mark.slow
def test_eight_devices_to_two_processes_of_two(digits_npz, tmp_path):
    eight = str(tmp_path / "eight")
    run_main(_main_args(eight, digits_npz), 1, 8, str(tmp_path / "log8"))
    resumed = resume_copy(eight, str(tmp_path / "resumed"), 3)
    outs = run_main(_main_args(resumed, digits_npz), 2, 2, str(tmp_path / "log2x2"))
    assert all("resumed from checkpoint at step 3" in out for out in outs)
    _assert_continues_like(resumed, eight)
