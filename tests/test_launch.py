"""The sweep launcher: expansion (variant × repeat × start), seeds, workdir collisions, DONE
markers, skipping, re-running interrupted runs, parallel slots; the SLURM script's guard."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from launch import sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GNE = os.path.join("configs", "gne", "cifar.py")


def test_plan_expands_variants_repeats_and_start_like_cifar10_sh(tmp_path):
    family = sweep.load_family(GNE)
    variants = sweep.variants_of(family, "norm", None, GNE)
    assert variants == ["wn32", "l2norm", "wn", "l1norm"]
    runs = sweep.plan(GNE, variants, repeats=4, start=2, root=str(tmp_path),
                      overrides=["num_epochs=3"])
    assert len(runs) == 16
    assert [r.repeat for r in runs[:4]] == [2, 3, 4, 5]
    r = runs[5]
    assert r.variant == "l2norm" and r.repeat == 3
    assert r.workdir == os.path.join(str(tmp_path), "l2norm", "3")
    assert f"--config={GNE}:l2norm" in r.command and "--config.seed=3" in r.command
    assert "--config.num_epochs=3" in r.command and r.command[1:3] == ("-m", "gnj.main")


def test_family_seed_keys_and_options(tmp_path):
    path = os.path.join("configs", "nn_mass", "mlp.py")
    family = sweep.load_family(path)
    runs = sweep.plan(path, ["readme"], 2, 0, str(tmp_path), options="runlocal",
                      seed_keys=family.SEED_KEYS)
    assert "--config.model.topology_seed=1" in runs[1].command
    assert runs[1].workdir.endswith(os.path.join("readme__runlocal", "1"))


def test_colliding_workdirs_and_bad_input_are_refused(tmp_path):
    with pytest.raises(ValueError, match="would both write"):
        sweep.plan(GNE, ["bn_relu", "bn_relu"], 1, 0, str(tmp_path))
    with pytest.raises(ValueError, match="would both write"):  # same dir after sanitising
        sweep.plan("x.py", ["a,b", "a__b"], 1, 0, str(tmp_path))
    with pytest.raises(ValueError, match="no segment 'nope'; valid: initialization"):
        sweep.variants_of(sweep.load_family(GNE), "nope", None, GNE)
    with pytest.raises(ValueError, match="key=value"):
        sweep.plan(GNE, ["bn_relu"], 1, 0, str(tmp_path), overrides=["num_epochs"])
    with pytest.raises(ValueError, match="repeats"):
        sweep.plan(GNE, ["bn_relu"], 0, 0, str(tmp_path))


def _fake_run(tmp_path, name, code):
    workdir = str(tmp_path / name)
    cmd = (sys.executable, "-c", code)
    return sweep.Run(name, 0, workdir, cmd)


def test_execute_marks_done_skips_finished_and_reruns_failed(tmp_path):
    counter = tmp_path / "count"
    ok = _fake_run(tmp_path, "ok", f"open({str(counter)!r}, 'a').write('x')")
    flaky_flag = tmp_path / "flag"
    flaky = _fake_run(tmp_path, "flaky", f"import os, sys; p = {str(flaky_flag)!r}\n"
                      "if not os.path.exists(p):\n    open(p, 'w').close(); sys.exit(3)")
    first = sweep.execute([ok, flaky], parallel=1, poll_seconds=0.01)
    assert [r.variant for r in first["done"]] == ["ok"]
    assert [r.variant for r in first["failed"]] == ["flaky"]
    assert os.path.exists(os.path.join(ok.workdir, sweep.DONE))
    assert not os.path.exists(os.path.join(flaky.workdir, sweep.DONE))
    second = sweep.execute([ok, flaky], parallel=1, poll_seconds=0.01)
    assert [r.variant for r in second["skipped"]] == ["ok"]
    assert [r.variant for r in second["done"]] == ["flaky"]
    assert counter.read_text() == "x"  # the finished run was not repeated
    assert "$ " in open(os.path.join(flaky.workdir, "log.txt")).read()


def test_execute_runs_n_at_a_time_with_one_gpu_per_slot(tmp_path):
    code = ("import os, time; t = time.time(); time.sleep(0.6); "
            "gpu = os.environ['CUDA_VISIBLE_DEVICES']; "
            "open('out.txt', 'w').write(f'{t} {time.time()} {gpu}')")
    runs = []
    for i in range(4):
        r = _fake_run(tmp_path, f"r{i}", f"import os; os.chdir({str(tmp_path / f'r{i}')!r}); "
                      + code)
        runs.append(r)
    t0 = time.time()
    result = sweep.execute(runs, parallel=2, gpus=["5", "7"], poll_seconds=0.01)
    assert len(result["done"]) == 4 and time.time() - t0 < 4 * 0.6
    spans = [tuple(open(tmp_path / f"r{i}" / "out.txt").read().split()) for i in range(4)]
    assert {s[2] for s in spans} == {"5", "7"}
    # never more than two at once: every start is before at most one other run's end
    for i, (s, _, _) in enumerate(spans):
        overlapping = sum(float(a) <= float(s) < float(b) for j, (a, b, _) in enumerate(spans)
                          if j != i)
        assert overlapping <= 1


def test_dry_run_prints_commands_and_validates_variants(tmp_path, capsys):
    assert sweep.main([GNE, "--segment", "resnet", "--repeats", "2", "--root",
                       str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("gnj.main") == 16 and "res_fixup1_5s_mixup repeat 1 (to run)" in out
    with pytest.raises(ValueError, match="no variant 'bogus'"):
        sweep.main([GNE, "--variants", "bogus", "--root", str(tmp_path), "--dry-run"])


@pytest.mark.slow
def test_a_real_sweep_trains_and_then_skips(tfds_dir, tmp_path):
    args = [sys.executable, "-m", "launch.sweep", GNE, "--variants", "km_tanh", "--options",
            "runlocal", "--repeats", "2", "--root", str(tmp_path), "--override",
            f"dataset.data_dir={tfds_dir}", "quiet=True"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for r in (0, 1):
        workdir = tmp_path / "km_tanh__runlocal" / str(r)
        assert (workdir / sweep.DONE).exists() and (workdir / "metrics.jsonl").exists()
        assert f'"seed": {r}' in (workdir / "config.json").read_text()
    again = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=env, timeout=1800)
    assert "0 done, 2 already done, 0 failed" in again.stdout


def test_slurm_script_refuses_to_start_without_a_coordinator(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")
           and k not in ("COORDINATOR_ADDRESS", "NUM_PROCESSES", "PROCESS_ID")}
    proc = subprocess.run(["bash", os.path.join(REPO, "launch", "slurm.sh"), "--config=x",
                           "--workdir=y"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "COORDINATOR_ADDRESS is not set" in proc.stderr
    env["COORDINATOR_ADDRESS"] = "host0:1234"
    proc = subprocess.run(["bash", os.path.join(REPO, "launch", "slurm.sh"), "--config=x",
                           "--workdir=y"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "NUM_PROCESSES is not" in proc.stderr
    env.update(NUM_PROCESSES="1", PROCESS_ID="0", PYTHON="echo")
    proc = subprocess.run(["bash", os.path.join(REPO, "launch", "slurm.sh"), "--config=x",
                           "--workdir=y"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0
    assert proc.stdout.split() == ["-m", "gnj.main", "--multihost",
                                   "--coordinator_address=host0:1234", "--num_processes=1",
                                   "--process_id=0", "--config=x", "--workdir=y"]


def test_analyze_mode_runs_on_the_same_workdirs_with_its_own_marker(tmp_path):
    path = os.path.join("configs", "nn_mass", "mlp.py")
    train = sweep.plan(path, ["digits,d8,w8,tc3"], 1, 0, str(tmp_path))
    analyze = sweep.plan(path, ["digits,d8,w8,tc3"], 1, 0, str(tmp_path), mode="analyze")
    assert analyze[0].workdir == train[0].workdir
    assert analyze[0].command == (*train[0].command, "--mode=analyze")
    assert (train[0].marker, analyze[0].marker) == ("DONE", "DONE.analyze")
    os.makedirs(train[0].workdir)
    open(os.path.join(train[0].workdir, "DONE"), "w").close()
    assert sweep.is_done(train[0]) and not sweep.is_done(analyze[0])  # trained, not analysed
    with pytest.raises(ValueError, match="--mode must be one of train, eval, analyze"):
        sweep.plan(path, ["digits"], 1, 0, str(tmp_path), mode="predict")


def test_multihost_without_a_coordinator_fails_before_writing_anything(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLURM_") and k != "JAX_COORDINATOR_ADDRESS"}
    env["JAX_PLATFORMS"] = "cpu"
    workdir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "gnj.main", "--multihost",
                           "--config=configs/default.py:runlocal", f"--workdir={workdir}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode != 0
    assert "multi-host run without a coordinator address" in proc.stderr
    assert not workdir.exists()


# ------------------------------------------------- the report's signal-propagation columns


def _write(workdir, records=None, analysis=None):
    import json

    os.makedirs(workdir, exist_ok=True)
    if records is not None:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump({"seed": 0}, f)
        with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    if analysis is not None:
        os.makedirs(os.path.join(workdir, "analysis"))
        with open(os.path.join(workdir, "analysis", "analysis.json"), "w") as f:
            json.dump(analysis, f)


def test_report_gradient_spread_correlations_and_analysis_columns(tmp_path):
    from gnj import report

    # grad_l2 = ‖∂L/∂W‖²: norms (1, 2, 8) at the first probe → spread 8; (3, 3, 3) → 1
    first = {"step": 10, "grad_l2/a/kernel": 1.0, "grad_l2/b/kernel": 4.0,
             "grad_l2/c/kernel": 64.0}
    last = {"step": 30, "grad_l2/a/kernel": 9.0, "grad_l2/b/kernel": 9.0,
            "grad_l2/c/kernel": 9.0, "eval/accuracy": 0.5, "eval/loss": 1.0}
    _write(str(tmp_path / "gne" / "0"), [first, {"step": 20, "train/loss": 1.0}, last])
    corr = [{"step": 11, "corr/s1/conv/forward": 0.0, "corr/diversity": -1.0},
            {"step": 22, "corr/s1/conv/forward": 0.0, "corr/s2/conv/forward": 0.25,
             "corr/s1/conv/backward": 7.0, "corr/diversity": -2.5, "eval/accuracy": 0.1}]
    _write(str(tmp_path / "constnet" / "0"), corr)
    for r, (mass, ldi) in enumerate([(22.1, 0.5), (22.1, 0.7), (22.1, 0.9)]):
        _write(str(tmp_path / "mass" / str(r)),
               analysis={"nn_mass": mass, "ldi": {"ldi_mean": ldi, "ldi_std": 0.1}})
    rows = {r["run"]: r for r in report.report(str(tmp_path), plots=False)}
    assert rows["gne"]["grad_spread_first"] == pytest.approx(8.0)
    assert rows["gne"]["grad_spread_last"] == pytest.approx(1.0)
    # the last record's smallest and largest −log|ρ_forward| (s1 still symmetric: 0)
    assert (rows["constnet"]["corr_forward_min"], rows["constnet"]["corr_forward_max"]) == (
        0.0, 0.25)
    assert rows["constnet"]["diversity"] == -2.5
    assert rows["mass"]["n"] == 3 and rows["mass"]["steps"] == 0  # analysis-only runs
    assert rows["mass"]["nn_mass"] == pytest.approx(22.1)
    assert rows["mass"]["ldi_mean"] == pytest.approx(0.7)  # median over repeats
    for missing in ("nn_mass", "ldi_mean", "grad_spread_first"):
        assert rows["constnet"][missing] != rows["constnet"][missing]  # NaN: not logged
    table = (tmp_path / "report" / "results.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| run"))
    assert "grad-norm spread, first probe" in header and "LDI (mean σ)" in header
    gne_line = next(line for line in table.splitlines() if line.startswith("| gne "))
    assert "| 8 | 1 |" in gne_line and gne_line.count("—") >= 4


def test_report_hides_signal_columns_when_no_run_logged_them(tmp_path):
    from gnj import report

    _write(str(tmp_path / "plain" / "0"), [{"step": 5, "eval/accuracy": 0.9, "eval/loss": 0.3}])
    table = report.markdown(report.report(str(tmp_path), plots=False))
    assert "spread" not in table and "NN-Mass" not in table
    assert table.splitlines()[0].count("|") == 8  # the seven standard columns only


def test_a_colliding_sweep_is_refused_before_any_workdir_exists(tmp_path):
    root = tmp_path / "sweep"
    with pytest.raises(ValueError, match="would both write into"):
        sweep.main([GNE, "--variants", "km_relu,digits", "km_relu,digits", "--root", str(root)])
    with pytest.raises(ValueError, match="no variant 'km_rleu'; valid: bn_relu"):
        sweep.main([GNE, "--variants", "km_relu", "km_rleu", "--root", str(root)])
    assert not root.exists()
