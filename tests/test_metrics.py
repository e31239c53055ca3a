"""The metric writer: throughput excludes evaluation time; resume cuts metrics.jsonl back."""

import json

from gnj import metrics
from gnj.metrics import MetricWriter, read_jsonl, truncate_jsonl


def test_steps_per_sec_excludes_eval_time(monkeypatch, tmp_path):
    now = [100.0]
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: now[0])
    writer = MetricWriter(str(tmp_path), 0, 100, quiet=True)
    now[0] += 2.0  # 20 steps and a 1.5 s evaluation in 2 s of wall time
    a = writer.write(20, {"train/loss": 1.0}, eval_seconds=1.5)
    now[0] += 1.0  # 10 steps, no evaluation
    b = writer.write(30, {"train/loss": 0.5})
    writer.close()
    assert a["perf/steps_per_sec"] == 20 / 0.5 and a["perf/eval_sec"] == 1.5
    assert b["perf/steps_per_sec"] == 10 / 1.0 and "perf/eval_sec" not in b
    assert [r["step"] for r in read_jsonl(str(tmp_path / "metrics.jsonl"))] == [20, 30]


def test_truncate_keeps_steps_up_to_the_checkpoint_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "train/loss": 1.0 / s}) for s in (10, 20, 30)]
    path.write_text("\n".join(lines) + '\n{"step": 40, "train/lo')
    truncate_jsonl(str(path), 20)
    assert [r["step"] for r in read_jsonl(str(path))] == [10, 20]


def test_a_json_line_that_is_not_an_object_is_a_damaged_record(tmp_path):
    import pytest

    from gnj.workdir import WorkdirError

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n5\n{"step": 2}\n')
    assert read_jsonl(str(path)) == [{"step": 1}, {"step": 2}]
    with pytest.raises(WorkdirError, match="damaged at line 2"):
        truncate_jsonl(str(path), 2)
