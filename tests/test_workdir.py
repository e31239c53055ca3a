"""The workdir lock, the config record and its history, strict-JSON metrics (no training)."""

import json
import math
import os
import socket
import subprocess
import sys

import pytest

from gnj import workdir as workdir_lib
from gnj.metrics import MetricWriter, read_jsonl, truncate_jsonl
from gnj.workdir import WorkdirError
from tests.test_train import _small_config


def _write_lock(path, pid, host=None):
    with open(os.path.join(path, workdir_lib.LOCK_FILE), "w") as f:
        json.dump({"pid": pid, "host": host or socket.gethostname()}, f)


def test_second_owner_is_refused_and_lock_released(tmp_path):
    with workdir_lib.lock(str(tmp_path)):
        owner = json.load(open(tmp_path / workdir_lib.LOCK_FILE))
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(WorkdirError, match=f"in use by process {os.getpid()}"):
            with workdir_lib.lock(str(tmp_path)):
                pass
    assert not os.path.exists(tmp_path / workdir_lib.LOCK_FILE)


def test_live_owner_elsewhere_refused_stale_owner_taken_over(tmp_path, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(str(tmp_path), sleeper.pid)
        with pytest.raises(WorkdirError, match=f"in use by process {sleeper.pid}"):
            with workdir_lib.lock(str(tmp_path)):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    _write_lock(str(tmp_path), sleeper.pid)  # now a dead pid on this host: stale
    with workdir_lib.lock(str(tmp_path)):
        assert json.load(open(tmp_path / workdir_lib.LOCK_FILE))["pid"] == os.getpid()
    assert f"stale lock of process {sleeper.pid}" in capsys.readouterr().err
    _write_lock(str(tmp_path), sleeper.pid, host="another-host")  # cannot tell: refused
    with pytest.raises(WorkdirError, match="another-host"):
        with workdir_lib.lock(str(tmp_path)):
            pass
    with workdir_lib.lock(str(tmp_path), shared=True):  # --multihost: one run, no lock
        pass


def _config(**changes):
    return _small_config("", **changes)


def test_changed_config_on_resume_is_refused_naming_the_keys(tmp_path):
    w = str(tmp_path)
    workdir_lib.record_config(_config(), w)
    original = open(tmp_path / "config.json").read()
    with pytest.raises(WorkdirError) as info:
        workdir_lib.record_config(_config(**{"optim.lr": 0.5, "seed": 7}), w)
    assert "optim.lr: 0.1 -> 0.5" in str(info.value) and "seed: 0 -> 7" in str(info.value)
    assert "--allow_config_change" in str(info.value)
    workdir_lib.record_config(_config(num_steps=60, log_every_steps=5), w)  # run controls
    workdir_lib.record_config(_config(**{"optim.lr": 0.5}), w, allow_change=True)
    workdir_lib.record_config(_config(**{"optim.lr": 0.5}), w)  # the accepted change stands
    assert open(tmp_path / "config.json").read() == original  # never rewritten
    history = [json.loads(line) for line in open(tmp_path / workdir_lib.HISTORY_FILE)]
    assert [sorted(h["changed"]) for h in history] == [
        ["log_every_steps", "num_steps"], ["log_every_steps", "num_steps", "optim.lr"]]
    with pytest.raises(WorkdirError, match="different model or dataset"):
        workdir_lib.record_config(_config(**{"model.depth": 14}), w, allow_change=True)


def test_damaged_config_json_is_named(tmp_path):
    (tmp_path / "config.json").write_bytes(b"\x89PNG\r\n garbage")
    with pytest.raises(WorkdirError, match=r"config.json is damaged .* move it aside"):
        workdir_lib.record_config(_config(), str(tmp_path))


def test_nonfinite_metrics_are_strict_json_and_read_back(tmp_path):
    writer = MetricWriter(str(tmp_path), 0, 10, quiet=True)
    writer.write(1, {"train/loss": math.nan, "a": math.inf, "b": -math.inf, "c": 0.5})
    writer.close()
    line = open(tmp_path / "metrics.jsonl").read().strip()
    strict = json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert strict["train/loss"] == "NaN" and strict["a"] == "Infinity"
    (record,) = read_jsonl(str(tmp_path / "metrics.jsonl"))
    assert math.isnan(record["train/loss"]) and record["a"] == math.inf
    assert record["b"] == -math.inf and record["c"] == 0.5


def test_truncation_keeps_nonfinite_drops_torn_last_line_refuses_damage(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "x": "NaN"}\n{"step": 2, "x": NaN}\n{"step": 3, "x": 1}\n'
                    '{"step": 4, "x"')
    truncate_jsonl(str(path), 3)
    assert [r["step"] for r in read_jsonl(str(path))] == [1, 2, 3]
    assert all(math.isnan(r["x"]) for r in read_jsonl(str(path))[:2])
    assert "NaN," not in path.read_text()  # rewritten strict
    path.write_bytes(b'{"step": 1}\n\xff\xfe\x00\n{"step": 2}\n')
    with pytest.raises(WorkdirError, match="metrics.jsonl is damaged at line 2"):
        truncate_jsonl(str(path), 2)
