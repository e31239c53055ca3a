"""Runs that stop early and clearly: divergence, preemption, resume honesty, damaged workdirs.

Training runs use the runlocal config (ResNet-8 on 8×8 digits, a few steps) in-process;
signals and faults are injected at a chosen step through an analysis hook or a wrapped data
source, so every case is deterministic. The command line is exercised only for exit statuses.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gnj import checkpoint, interrupts, train
from gnj import data as data_lib
from gnj.metrics import read_jsonl
from gnj.workdir import WorkdirError
from tests.conftest import REPO
from tests.test_train import _main, _small_config

# Orbax leaves unclosed TensorStore handles behind a failed restore or write (damage, ENOSPC).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

CADENCE = dict(num_steps=8, log_every_steps=3, eval_every_steps=4, checkpoint_every_steps=100)


def _cfg(tfds_dir, **overrides):
    return _small_config(tfds_dir, **{**CADENCE, **overrides})


def _records(workdir):
    return [{k: v for k, v in r.items() if not k.startswith("perf/")}
            for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))]


def _params(workdir, step=None, everything=False):
    """Leaves of the params (``everything``: of the whole train state) saved at ``step``."""
    mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    step = mngr.latest_step() if step is None else step
    restored = mngr.restore(step, args=ocp.args.StandardRestore())
    return jax.tree.leaves(restored if everything else restored["params"])


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _hook_at(monkeypatch, step, action):
    """Run ``action()`` inside the loop right after step ``step`` (an analysis hook)."""
    real = train.train_time_analyses

    def hooks(config, model, preprocess):
        def hook(state, batch):
            if int(state.step) == step:
                action()
            return {}

        return [*real(config, model, preprocess), (1, hook)]

    monkeypatch.setattr(train, "train_time_analyses", hooks)


@pytest.fixture(scope="module")
def reference(tfds_dir, tmp_path_factory):
    """An uninterrupted run: its workdir."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    train.train_and_evaluate(_cfg(tfds_dir), workdir)
    return workdir


def test_eval_at_every_multiple_of_eval_every(reference):
    records = _records(reference)
    assert [r["step"] for r in records] == [3, 4, 6, 8]
    assert [("eval/loss" in r, "train/loss" in r) for r in records] == [
        (False, True), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize("signum", [signal.SIGTERM,
                                    pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_signal_saves_and_resume_equals_uninterrupted(monkeypatch, tfds_dir, tmp_path,
                                                      reference, signum):
    """The signal lands after step 4 (an eval step, not a log step): the run stops after
    step 5, saves it with its unlogged window and owes nothing; the resumed run's records and
    final weights equal the uninterrupted run's."""
    workdir = str(tmp_path)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    _hook_at(monkeypatch, 4, lambda: os.kill(os.getpid(), signum))
    with pytest.raises(interrupts.Preempted) as info:
        train.train_and_evaluate(_cfg(tfds_dir), workdir)
    assert info.value.step == 5 and info.value.exit_status == 128 + signum
    assert "preempted at step 5" in str(info.value)
    assert [r["step"] for r in _records(workdir)] == [3, 4]  # no eval or record after
    # the handlers the run found (SIG_IGN under a background job) are restored
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    monkeypatch.undo()
    train.train_and_evaluate(_cfg(tfds_dir), workdir)
    assert _records(workdir) == _records(reference)
    _assert_same(_params(workdir, everything=True), _params(reference, everything=True))


@pytest.mark.slow
def test_preempted_at_a_log_and_eval_step_owes_its_record(monkeypatch, tfds_dir, tmp_path,
                                                          reference):
    """Stopped after step 6 (a log step): its record is not written at the signal (no time
    for it) but by the resumed run, identical to the reference's."""
    workdir = str(tmp_path)
    _hook_at(monkeypatch, 5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(interrupts.Preempted) as info:
        train.train_and_evaluate(_cfg(tfds_dir), workdir)
    assert info.value.step == 6
    assert [r["step"] for r in _records(workdir)] == [3, 4]
    monkeypatch.undo()
    train.train_and_evaluate(_cfg(tfds_dir), workdir)
    assert _records(workdir) == _records(reference)


@pytest.mark.slow
def test_killed_after_a_mid_window_checkpoint_resumes_identical(monkeypatch, tfds_dir, tmp_path,
                                                                reference):
    """A crash after the periodic checkpoint of step 5 (not a log step): the resumed run's
    record of step 6 still averages steps 4–6, as the uninterrupted run's does."""
    workdir = str(tmp_path)

    def crash():
        raise KeyboardInterrupt  # anything but a handled signal: like a kill

    _hook_at(monkeypatch, 7, crash)
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(_cfg(tfds_dir, checkpoint_every_steps=5), workdir)
    monkeypatch.undo()
    train.train_and_evaluate(_cfg(tfds_dir, checkpoint_every_steps=5), workdir)
    assert _records(workdir) == _records(reference)
    _assert_same(_params(workdir, everything=True), _params(reference, everything=True))


class _NaNAt:
    """A data source whose training batch of step ``step`` (1-based) holds NaN images."""

    def __init__(self, source, step):
        self._source, self._step = source, step

    def __getattr__(self, name):
        return getattr(self._source, name)

    def train_batches(self, start_step):
        for s, batch in enumerate(self._source.train_batches(start_step), start_step + 1):
            image = batch["image"].astype(np.float32)
            if s == self._step:
                image[:] = np.nan
            yield {**batch, "image": image}


def _nan_at(monkeypatch, step):
    real = data_lib.build
    monkeypatch.setattr(data_lib, "build", lambda config: _NaNAt(real(config), step))


def test_divergence_stops_and_keeps_the_last_good_checkpoint(monkeypatch, tfds_dir, tmp_path):
    workdir = str(tmp_path)
    _nan_at(monkeypatch, 5)
    with pytest.raises(interrupts.Diverged) as info:
        train.train_and_evaluate(_cfg(tfds_dir, checkpoint_every_steps=2), workdir)
    assert info.value.step == 5 and info.value.last_good == 4
    steps = ocp.CheckpointManager(os.path.join(workdir, "checkpoints")).all_steps()
    assert sorted(steps) == [2, 4]
    for leaf in _params(workdir, 4):
        assert np.all(np.isfinite(leaf))
    lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
    for line in lines:  # strict JSON: no bare NaN
        json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl"))
    records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    assert records[-1] == {"step": 5, "event": "diverged"}
    assert records[-2]["step"] == 6 and np.isnan(records[-2]["train/grad_norm"])


@pytest.mark.slow
def test_skip_mode_leaves_the_state_of_the_step_before(monkeypatch, tfds_dir, tmp_path):
    """``on_nonfinite="skip"``: the NaN step's update is not applied, so the state after it
    equals the state after the step before (bitwise); the run goes on to the end."""
    _nan_at(monkeypatch, 5)
    before, skipped = str(tmp_path / "a"), str(tmp_path / "b")
    constant = {"optim.schedule": "constant", "on_nonfinite": "skip"}  # lr not tied to length
    train.train_and_evaluate(_cfg(tfds_dir, num_steps=4, **constant), before)
    train.train_and_evaluate(_cfg(tfds_dir, num_steps=5, **constant), skipped)
    _assert_same(_params(skipped, 5), _params(before, 4))
    assert read_jsonl(os.path.join(skipped, "metrics.jsonl"))[-1]["train/nonfinite"] == 0.5


# ----------------------------------------------------------------------------- checkpoints


def _data_files(step_dir):
    """The array data files of a checkpoint (orbax's ``.../d/<hash>``), smallest first."""
    out = [os.path.join(root, n) for root, _, names in os.walk(step_dir) for n in names
           if os.path.basename(root) == "d"]
    return sorted(out, key=os.path.getsize)


def _truncate(step_dir):
    path = _data_files(step_dir)[-1]
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _overwrite(step_dir):
    path = _data_files(step_dir)[-1]
    size = os.path.getsize(path)
    with open(path, "wb") as f:
        f.write(np.random.default_rng(0).bytes(size))


def _delete(step_dir):
    os.remove(_data_files(step_dir)[-1])


def _metadata(step_dir):
    with open(os.path.join(step_dir, "default", "_METADATA"), "w") as f:
        f.write("{not json")


def _flip(step_dir):
    path = _data_files(step_dir)[-1]
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        chunk = f.read(8)
        f.seek(os.path.getsize(path) // 2)
        f.write(bytes(b ^ 0xFF for b in chunk))


def _unsealed_truncate(step_dir):
    """Damage orbax itself notices, in a checkpoint without checksums (older gnj)."""
    os.remove(os.path.join(step_dir, checkpoint.CHECKSUM_FILE))
    _metadata(step_dir)


@pytest.fixture(scope="module")
def saved_run(tfds_dir, tmp_path_factory):
    """A finished run with checkpoints at steps 2 and 4."""
    workdir = str(tmp_path_factory.mktemp("saved"))
    train.train_and_evaluate(_cfg(tfds_dir, num_steps=4, checkpoint_every_steps=2), workdir)
    return workdir


@pytest.fixture(scope="module")
def initial_state(tfds_dir):
    """A restore target (structure, dtypes, shardings) of the saved run's state."""
    return train.build_experiment(_cfg(tfds_dir, num_steps=4, checkpoint_every_steps=2)).state


@pytest.mark.parametrize("damage", [_truncate, _overwrite, _delete, _metadata, _flip,
                                    _unsealed_truncate])
def test_damaged_newest_checkpoint_is_moved_aside(tmp_path, saved_run, initial_state, damage,
                                                  capsys):
    workdir = str(tmp_path / "w")
    shutil.copytree(saved_run, workdir)
    damage(os.path.join(workdir, "checkpoints", "4"))
    ckpt = checkpoint.manager(workdir, 2, 3)
    state, step = ckpt.restore_latest(initial_state)
    assert step == 2
    _assert_same(jax.tree.leaves(state.params), _params(saved_run, 2))
    err = capsys.readouterr().err
    assert err.count("warning: checkpoint of step 4 is damaged") == 1
    moved = os.listdir(os.path.join(workdir, checkpoint.DAMAGED_DIR))
    assert len(moved) == 1 and moved[0].startswith("4-")
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]


def test_intact_checkpoint_of_another_shape_is_an_error_not_damage(tmp_path, saved_run,
                                                                   initial_state):
    workdir = str(tmp_path / "w")
    shutil.copytree(saved_run, workdir)
    wider = initial_state.replace(params=jax.tree.map(
        lambda x: np.zeros((*x.shape, 2), x.dtype), initial_state.params))
    with pytest.raises(RuntimeError, match="cannot be restored into this config's state"):
        checkpoint.manager(workdir, 2, 3).restore_latest(wider)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
    assert not os.path.exists(os.path.join(workdir, checkpoint.DAMAGED_DIR))


def test_resume_from_the_fallback_is_bitwise(tfds_dir, tmp_path, saved_run):
    workdir = str(tmp_path / "w")
    shutil.copytree(saved_run, workdir)
    _flip(os.path.join(workdir, "checkpoints", "4"))
    train.train_and_evaluate(_cfg(tfds_dir, num_steps=4, checkpoint_every_steps=2), workdir)
    _assert_same(_params(workdir, 4, True), _params(saved_run, 4, True))
    assert _records(workdir) == _records(saved_run)


def _mount_tmpfs(path, size):
    os.makedirs(path)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                          capture_output=True)
    return proc.returncode == 0


def test_disk_full_names_the_path_and_keeps_earlier_checkpoints(monkeypatch, tfds_dir,
                                                                tmp_path):
    """A workdir on a small tmpfs where the test can mount one (the first checkpoint fits,
    the second does not), otherwise ENOSPC injected into the second save."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # orbax's failed writer tasks
    mount = str(tmp_path / "fs")
    mounted = _mount_tmpfs(mount, "900k")
    workdir = os.path.join(mount, "run")
    if not mounted:
        real = checkpoint.Checkpoints.save

        def save(self, step, state, **kw):
            if step == 4:
                raise self._error(step, OSError(28, "No space left on device"))
            return real(self, step, state, **kw)

        monkeypatch.setattr(checkpoint.Checkpoints, "save", save)
    try:
        with pytest.raises(checkpoint.CheckpointSaveError) as info:
            train.train_and_evaluate(_cfg(tfds_dir, num_steps=6, checkpoint_every_steps=2,
                                          quiet=True), workdir)
        message = str(info.value)
        assert os.path.join(workdir, "checkpoints") in message
        assert "No space left on device" in message
        mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
        assert 2 in mngr.all_steps()
        assert checkpoint.verify_checksums(os.path.join(workdir, "checkpoints", "2")) is None
        for leaf in _params(workdir, 2):
            assert np.all(np.isfinite(leaf))
    finally:
        if mounted:
            subprocess.run(["umount", mount], check=False)


# ----------------------------------------------------------------------------- workdir


def test_damaged_config_and_metrics_files_are_named(tfds_dir, tmp_path, saved_run):
    config_dir, metrics_dir = str(tmp_path / "c"), str(tmp_path / "m")
    shutil.copytree(saved_run, config_dir)
    shutil.copytree(saved_run, metrics_dir)
    with open(os.path.join(config_dir, "config.json"), "wb") as f:
        f.write(b"\xff\xfe garbage")
    with pytest.raises(WorkdirError, match="config.json is damaged.*move it aside"):
        train.train_and_evaluate(_cfg(tfds_dir, num_steps=4, checkpoint_every_steps=2),
                                 config_dir)
    path = os.path.join(metrics_dir, "metrics.jsonl")
    lines = open(path, "rb").read().splitlines()
    open(path, "wb").write(b"\n".join([lines[0], b"\xff\x00{", *lines[1:]]) + b"\n")
    with pytest.raises(WorkdirError, match="metrics.jsonl is damaged at line 2"):
        train.train_and_evaluate(_cfg(tfds_dir, num_steps=4, checkpoint_every_steps=2),
                                 metrics_dir)


# ----------------------------------------------------------------------------- command line


def _cli(workdir, tfds_dir, *extra):
    """The command line of a long run logging every step (later flags override earlier)."""
    return _main(workdir, tfds_dir, "--config.num_steps=100000", "--config.log_every_steps=1",
                 "--config.eval_every_steps=100000", "--config.checkpoint_every_steps=100000",
                 *extra)


def _start_and_wait_for_training(cmd):
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workdir = cmd[4].split("=", 1)[1]
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no training step: {proc.communicate()}")


def test_exit_statuses_and_lines():
    from gnj import main

    config = _small_config("")
    assert main.outcome(interrupts.Preempted(5, signal.SIGTERM), config) == (
        "preempted at step 5 (SIGTERM): checkpoint saved; run the same command again to resume",
        143)
    assert main.outcome(interrupts.Preempted(5, signal.SIGINT), config)[1] == 130
    line, status = main.outcome(interrupts.Diverged(7, 4), config)
    assert status == 3 and line.startswith("diverged at step 7") and "step 4" in line
    line, status = main.outcome(checkpoint.CheckpointSaveError("saving ... /w/checkpoints"), config)
    assert status == 1 and line.startswith("error: ") and "/w/checkpoints" in line
    assert main.outcome(WorkdirError("--workdir = 'x': in use"), config) == (
        "error: --workdir = 'x': in use", 2)
    assert main.outcome(RuntimeError("a bug"), config) is None  # shown with its traceback


@pytest.mark.slow
def test_sigterm_exit_status_and_line(tfds_dir, tmp_path):
    proc = _start_and_wait_for_training(_cli(tmp_path, tfds_dir))
    second = subprocess.run(_cli(tmp_path, tfds_dir), cwd=REPO, capture_output=True, text=True,
                            timeout=1800)  # the same workdir while the first one trains
    assert second.returncode == 2
    assert f"in use by process {proc.pid}" in second.stderr.strip().splitlines()[-1]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=1800)
    assert proc.returncode == 143, err
    assert "preempted at step" in err.strip().splitlines()[-1]
    assert "final:" not in out and "Traceback" not in err
    step = int(err.split("preempted at step ")[1].split()[0])
    assert step in ocp.CheckpointManager(str(tmp_path / "checkpoints")).all_steps()


@pytest.mark.slow
def test_second_ctrl_c_exits_at_once_leaving_complete_checkpoints(tfds_dir, tmp_path):
    proc = _start_and_wait_for_training(_cli(tmp_path, tfds_dir,
                                             "--config.checkpoint_every_steps=1"))
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=1800)
    assert proc.returncode == 130 and "Traceback" not in err, err
    mngr = ocp.CheckpointManager(str(tmp_path / "checkpoints"))
    for step in mngr.all_steps():  # every checkpoint orbax lists is complete and intact
        assert checkpoint.verify_checksums(str(tmp_path / "checkpoints" / str(step))) is None


@pytest.mark.slow
def test_divergence_exit_status(tfds_dir, tmp_path):
    """lr × 1e30 from step 5 on (a milestone at 5/44 of an epoch): exit 3, good checkpoints."""
    proc = subprocess.run(
        _cli(tmp_path, tfds_dir, "--config.num_steps=12", "--config.checkpoint_every_steps=2",
             "--config.optim.schedule=multistep(milestones=(0.1,), multiplier=1e30)"),
        cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("diverged at step")
    for leaf in _params(str(tmp_path)):
        assert np.all(np.isfinite(leaf))
