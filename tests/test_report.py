"""The results report: grouping of a sweep's runs, median/range over repeats of best and final
accuracy, the best of the median curve, and the markdown / CSV / PNG outputs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gnj import report

# accuracy at eval steps 100, 200, 300 for each repeat of two variants
CURVES = {
    "orth_tanh": [[0.50, 0.80, 0.70], [0.40, 0.60, 0.90], [0.55, 0.75, 0.72]],
    "bn_relu": [[0.60, 0.85, 0.88], [0.62, 0.84, 0.86]],
}


def _write_run(workdir, accs, seed, torn=False):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"seed": seed, "model": {"name": "serial_net"}}, f)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        for i, acc in enumerate(accs):
            step = 100 * (i + 1)
            f.write(json.dumps({"step": step - 50, "train/loss": 2.0 / (i + 1)}) + "\n")
            f.write(json.dumps({"step": step, "train/loss": 1.5 / (i + 1),
                                "eval/accuracy": acc, "eval/loss": 1.0 - acc}) + "\n")
        if torn:
            f.write('{"step": 999, "train/lo')


@pytest.fixture
def sweep_root(tmp_path):
    for variant, runs in CURVES.items():
        for r, accs in enumerate(runs):
            _write_run(str(tmp_path / variant / str(r)), accs, r, torn=(r == 0))
    (tmp_path / "orth_tanh" / "0" / "checkpoints").mkdir()
    return tmp_path


def test_medians_ranges_and_median_curve(sweep_root):
    rows = {r["run"]: r for r in report.report(str(sweep_root))}
    assert set(rows) == set(CURVES)
    for variant, runs in CURVES.items():
        a = np.array(runs)
        row = rows[variant]
        assert row["n"] == len(runs)
        assert row["best_median"] == pytest.approx(np.median(a.max(1)))
        assert (row["best_min"], row["best_max"]) == pytest.approx((a.max(1).min(),
                                                                     a.max(1).max()))
        assert row["final_median"] == pytest.approx(np.median(a[:, -1]))
        assert (row["final_min"], row["final_max"]) == pytest.approx((a[:, -1].min(),
                                                                       a[:, -1].max()))
        assert row["median_curve_best"] == pytest.approx(np.median(a, 0).max())
        assert row["final_loss_median"] == pytest.approx(np.median(1 - a[:, -1]))
        assert row["steps"] == 300
    # orth_tanh: best per run 0.8, 0.9, 0.75 → median 0.8; median curve (0.5, 0.75, 0.72) → 0.75
    assert rows["orth_tanh"]["best_median"] == pytest.approx(0.8)
    assert rows["orth_tanh"]["median_curve_best"] == pytest.approx(0.75)


def test_outputs_written(sweep_root):
    report.report(str(sweep_root))
    out = sweep_root / "report"
    md = (out / "results.md").read_text()
    assert "| orth_tanh | 3 | 80.00 [75.00–90.00] | 72.00 [70.00–90.00] | 75.00 |" in md
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["bn_relu", "orth_tanh"]
    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_single_workdir_and_missing_evals(tmp_path):
    _write_run(str(tmp_path / "one"), [0.3, 0.4], 0)
    os.makedirs(tmp_path / "noeval")
    (tmp_path / "noeval" / "config.json").write_text("{}")
    (tmp_path / "noeval" / "metrics.jsonl").write_text('{"step": 2, "train/loss": 1.0}\n')
    rows = {r["run"]: r for r in report.report(str(tmp_path), plots=False)}
    assert rows["one"]["best_median"] == pytest.approx(0.4)
    assert np.isnan(rows["noeval"]["best_median"])
    assert "| noeval | 1 | — [—–—]" in (tmp_path / "report" / "results.md").read_text()
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no runs"):
        report.collect(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no directory"):
        report.collect(str(tmp_path / "absent"))


def test_cli(sweep_root):
    proc = subprocess.run([sys.executable, "-m", "gnj.report", str(sweep_root), "--no-plots"],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    assert "| bn_relu | 2 |" in proc.stdout
