"""Config validation: ≥150 malformed invocations, each refused with one line naming key and value.

Most cases call the validation in-process (no compile: a config check, or the model traced
abstractly); a handful go through the real command line for the exit status, the single stderr
line, the absence of a traceback and an untouched workdir.
"""

import math
import os

import pytest

from configs import default
from gnj import config_schema, validate
from tests.conftest import run_python


def _config(**overrides):
    c = default.get_config("runlocal")
    with c.unlocked():
        for key, value in overrides.items():
            *parents, leaf = key.split(".")
            node = c
            for p in parents:
                node = node[p]
            if leaf in node:
                del node[leaf]  # a config file may set any type: bypass the type-safe cast
            node[leaf] = value
    return c


def _generated_cases():
    """Every declared field with every out-of-domain example of its domain."""
    cases = []
    for path, field in config_schema.FIELDS.items():
        for value in field.domain.invalid_examples():
            cases.append((path, value, {}))
    return cases


# Hand-written: every example of the issue and a few more (key, value, other overrides).
HAND_WRITTEN = [
    ("optim.lr", math.nan, {}),
    ("optim.lr", math.inf, {}),
    ("optim.lr", -0.1, {}),
    ("num_epochs", -1.0, {"num_steps": 0}),
    ("num_epochs", math.nan, {"num_steps": 0}),
    ("num_epochs", 0.0, {"num_steps": 0}),
    ("log_every_steps", -5, {}),
    ("log_every_steps", 0, {}),
    ("eval_every_steps", -1, {}),
    ("keep_checkpoints", 0, {}),
    ("keep_checkpoints", -2, {}),
    ("mixup_alpha", -1.0, {}),
    ("mixup_alpha", math.nan, {}),
    ("model.norm", "batch(momentum=2)", {}),
    ("model.norm", "batch(momentum=-1)", {}),
    ("model.norm", "batch(momentum=float('inf'))", {}),
    ("model.norm", "batch(momentum=True)", {}),
    ("model.norm", "batch(momentum=1e999)", {}),
    ("model.norm", "batch(epsilon=-1)", {}),
    ("model.norm", "batch(momentum=0.1, momentum=0.2)", {}),
    ("model.norm", "batch(mom=0.1)", {}),
    ("model.norm", "batch(momentum='x')", {}),
    ("model.norm", "group(groups=0)", {}),
    ("model.norm", "group(groups=2.5)", {}),
    ("model.norm", "bacth", {}),
    ("model.norm", "batch(0.1)", {}),
    ("model.norm", "batch(**x)", {}),
    ("model.norm", "__import__('os').system('true')", {}),
    ("model.norm", "batch(m=os.sep)", {}),
    ("model.norm", "lambda: 0", {}),
    ("model.act", "relux", {}),
    ("model.act", "elu(alpha=-1)", {}),
    ("model.act", "leaky_relu(negative_slope=nan)", {}),
    ("model.weight_init", "orthogonal(gain=-1)", {}),
    ("model.weight_init", "kaiming_normal(mode='fan_bad')", {}),
    ("optim.momentum", 2.0, {}),
    ("optim.momentum", -1.0, {}),
    ("optim.momentum", 1.0, {}),
    ("optim.momentum", True, {}),
    ("optim.momentum", math.inf, {}),
    ("optim.weight_decay", -1e-4, {}),
    ("optim.clip_norm", -1.0, {}),
    ("optim.clip_value", -0.5, {}),
    ("optim.warmup_epochs", -1.0, {}),
    ("optim.schedule", "multistep(milestones=(80, 40))", {}),
    ("optim.schedule", "multistep(milestones=(10, 10))", {}),
    ("optim.schedule", "multistep(multiplier=0)", {}),
    ("optim.schedule", "cosine(final_lr=-1)", {}),
    ("optim.schedule", "cosine(final_lr=5.0)", {}),
    ("optim.schedule", "wrn(drops=(1, -2))", {}),
    ("optim.schedule", "lubana_split(split=1.5)", {}),
    ("optim.schedule", "constant(base_lr=1)", {}),
    ("optim.schedule", "cosinee", {}),
    ("optim.name", "adamm", {}),
    ("optim.name", "sgd(lr=1)", {}),
    ("dataset.num_seg", 0, {}),
    ("dataset.name", "mnistt", {}),
    ("dataset.augment.crop_padding", -4, {}),
    ("batch_size", 0, {}),
    ("batch_size", -32, {}),
    ("eval_batch_size", 0, {}),
    ("num_steps", -3, {}),
    ("seed", -1, {}),
    ("seed", 2**40, {}),
    ("checkpoint_every_steps", 0, {}),
    ("model.depth", -1, {}),
    ("model.depth", 0, {}),
    ("model.depth", 8.5, {}),
    ("model.width", 0, {}),
    ("model.width", -16, {}),
    ("model.widthh", 16, {}),
    ("model.name", "resnet_cifarr", {}),
    ("on_nonfinite", "ignore", {}),
    ("restore_from", "/nonexistent/run", {}),
    ("pretrained", "/nonexistent/weights.pth", {}),
    ("optim.wd_mask", "(conv", {}),
    ("optim.lr_mult_regex", "[", {}),
]


def _key_of(path):
    return f"config.{path}"


@pytest.mark.parametrize("path,value,others", _generated_cases() + HAND_WRITTEN)
def test_malformed_config_is_refused_in_one_line(path, value, others, tmp_path):
    """Through the library entry point: refused before the data, the model or the workdir."""
    from gnj import train

    c = _config(**{**others, path: value})
    with pytest.raises(validate.ConfigError) as info:
        train.train_and_evaluate(c, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")
    line = info.value.line()
    assert line.startswith("error: ") and "\n" not in line
    assert info.value.key == _key_of(path), line
    assert repr(value)[:60].strip("'\"") in line or str(value) in line, line
    assert "valid" in line.split(": ", 2)[-1]


def test_enough_cases():
    assert len(_generated_cases()) + len(HAND_WRITTEN) >= 150


def test_declared_defaults_are_valid_and_unknown_keys_suggest_the_nearest():
    for variant in ("", "runlocal", "cifar10"):
        validate.check(default.get_config(variant))
    with pytest.raises(validate.ConfigError, match="did you mean 'width'"):
        validate.check(_config(**{"model.widht": 16}))


@pytest.mark.parametrize(
    "norm,key,fragment",
    [
        ("group(groups=3)", "config.model.norm", "does not divide"),
        (None, "config.model.depth", "6n+2"),
    ],
)
def test_shape_errors_surface_from_the_abstract_model(tfds_dir, norm, key, fragment):
    """The model is traced abstractly (``jax.eval_shape``) before any compile."""
    from gnj import train

    c = _config(**({"model.norm": norm} if norm else {"model.depth": 7}))
    c.dataset.data_dir = tfds_dir
    validate.check(c)  # the static checks cannot know the channel count or the depth rule
    with pytest.raises(validate.ConfigError) as info:
        train.build_experiment(c)
    assert info.value.key == key and fragment in info.value.line()


def test_workdir_is_expanded_and_empty_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert validate.resolve_workdir("~/runs/a") == str(tmp_path / "runs" / "a")
    for bad in ("", "  "):
        with pytest.raises(validate.ConfigError, match="--workdir"):
            validate.resolve_workdir(bad)
    (tmp_path / "file").write_text("x")
    with pytest.raises(validate.ConfigError, match="not a directory"):
        validate.resolve_workdir(str(tmp_path / "file"))


CLI_CASES = [  # (extra args, key named in the line, value named in the line)
    (["--config.optim.lrr=0.05"], "config.optim.lrr", "0.05"),
    (["--config.optim.lr=abc"], "config.optim.lr", "abc"),
    (["--config.optim.lr=nan"], "config.optim.lr", "nan"),
    (["--config.model.norm=batch(momentum=2)"], "config.model.norm", "batch(momentum=2)"),
    (["--config=configs/default.py:nope"], "--config", "nope"),
    (["--config=configs/missing.py"], "--config", "missing.py"),
    (["--mode=bogus"], "--mode", "bogus"),
]


def test_command_line_refusals(tmp_path):
    for i, (args, key, value) in enumerate(CLI_CASES):
        workdir = tmp_path / f"w{i}"
        proc = run_python(
            [
                "-m",
                "gnj.main",
                "--config=configs/default.py:runlocal",
                f"--workdir={workdir}",
                *args,
            ],
            check=False,
            timeout=1800,
        )
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, proc.stderr
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert key in lines[0] and value in lines[0], lines[0]
        assert "Traceback" not in proc.stderr + proc.stdout
        assert not os.path.exists(workdir)
    proc = run_python(
        ["-m", "gnj.main", "--config=configs/default.py:runlocal", "--workdir=", "--verbosity=1"],
        check=False,
        timeout=1800,
    )
    assert proc.returncode == 2 and "Traceback" in proc.stderr  # the log has the traceback
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --workdir = ''")
