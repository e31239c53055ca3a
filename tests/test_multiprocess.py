"""Several ``jax.distributed`` processes on localhost (gloo) against one process with the same
device count, through the real entry point ``python -m gnj.main --multihost``: per-step losses,
final parameters, BatchNorm statistics and optimizer state agree; each process reads only its
slice of every global batch; metrics are written once (process 0); the checkpoint written by the
processes together is restored by all of them."""

import os
import shutil

import jax
import numpy as np
import pytest

from gnj.metrics import read_jsonl
from tests.multiprocess import restore_on_host, rows_read, run_main

STEPS = 6


def _args(workdir, digits_npz, steps, *extra):
    return ["--config=configs/default.py:runlocal", f"--workdir={workdir}",
            f"--config.dataset.name=arrays(path={digits_npz!r})", "--config.model.width=8",
            f"--config.num_steps={steps}", "--config.log_every_steps=1",
            f"--config.eval_every_steps={STEPS}", "--config.checkpoint_every_steps=3", *extra]


def assert_states_close(a, b, rtol=1e-5, atol=1e-6):
    leaves_a, leaves_b = jax.tree.leaves_with_path(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b) and len(leaves_b) > 10
    for (path, x), y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol,
                                   err_msg=jax.tree_util.keystr(path))


def resume_copy(source: str, target: str, step: int) -> str:
    """``target``: a copy of the run in ``source`` cut back to its checkpoint of ``step`` (as if
    it had been stopped there), to be resumed with another device or process count."""
    shutil.copytree(source, target)
    for name in os.listdir(os.path.join(target, "checkpoints")):
        if name.isdigit() and int(name) > step:
            shutil.rmtree(os.path.join(target, "checkpoints", name))
    return target


@pytest.mark.slow  # end-to-end run (2 and 4 processes): make test-all
@pytest.mark.parametrize("processes", [2, 4])
def test_processes_match_one_process_with_as_many_devices(processes, digits_npz, tmp_path):
    """1 process × 2P devices trains 6 steps; P processes × 2 devices resume its step-3
    checkpoint (every process restores it) and must reproduce steps 4–6."""
    single = str(tmp_path / "single")
    run_main(_args(single, digits_npz, STEPS), 1, 2 * processes, str(tmp_path / "log1"))
    multi = resume_copy(single, str(tmp_path / "multi"), 3)
    outs = run_main(_args(multi, digits_npz, STEPS), processes, 2, str(tmp_path / "logn"))
    assert all("resumed from checkpoint at step 3" in out for out in outs)

    # metrics: written once, by process 0 (the others print no progress lines)
    ref, got = (read_jsonl(os.path.join(w, "metrics.jsonl")) for w in (single, multi))
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    assert not any("step 4/" in out for out in outs[1:]) and "step 4/" in outs[0]
    for key in ("train/loss", "train/grad_norm", "train/accuracy"):
        np.testing.assert_allclose([r[key] for r in got], [r[key] for r in ref], rtol=1e-5)
    np.testing.assert_allclose(got[-1]["eval/loss"], ref[-1]["eval/loss"], rtol=1e-5)
    assert got[-1]["eval/accuracy"] == ref[-1]["eval/accuracy"]

    # data: process p gathered the p-th contiguous slice of the single run's global batch
    global_rows = rows_read(str(tmp_path / "log1"), 0)
    per_process = [rows_read(str(tmp_path / "logn"), p) for p in range(processes)]
    assert all(sorted(rows) == [3, 4, 5] for rows in per_process)
    for step in (3, 4, 5):
        parts = [rows[step] for rows in per_process]
        assert all(len(part) == len(global_rows[step]) // processes for part in parts)
        assert sum(parts, []) == global_rows[step]

    # checkpoints: one step directory each, written together; equal to the single run's state
    assert sorted(os.listdir(os.path.join(multi, "checkpoints"))) == ["3", "6"]
    state_single, state_multi = restore_on_host(single, STEPS), restore_on_host(multi, STEPS)
    assert "batch_stats" in state_multi["model_state"]
    assert int(state_multi["step"]) == STEPS
    assert_states_close(state_multi, state_single)
