"""Command-line entry point.

    python -m gnj.main --config=configs/default.py --workdir=runs/default
    python -m gnj.main --config=configs/default.py:cifar10 --config.optim.lr=0.05 --workdir=...
    python -m gnj.main --config=... --workdir=... --mode=analyze

The config is locked: overriding a key that does not exist is an error, not a silent no-op. The
whole resolved config is validated before anything is written or compiled (``gnj/validate.py``).

Exit statuses (``docs/reliability.md``): 0 finished; 2 usage error (one line ``error: <key> =
<value>: <why>; <valid>`` on stderr, the traceback in the log with ``--verbosity=1``); 1 a
checkpoint save failed (the line names the path); 3 diverged
(a non-finite loss or gradient norm); 128 + signal number when preempted (143 SIGTERM, 130
SIGINT), after saving a checkpoint.
"""

from __future__ import annotations

import importlib.util
import logging as std_logging
import re
import signal
import sys
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from gnj import config_schema, validate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (:arg).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "analyze", "eval"],
                          "train (resumes if the workdir has a checkpoint), analyze (Jacobian "
                          "analysis of the latest checkpoint or of the init), eval (evaluate the "
                          "latest checkpoint only).")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize(); the "
                               "processes share the workdir (no single-owner lock).")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NPROC = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PID = flags.DEFINE_integer("process_id", None, "This process's id (multi-host).")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume although the config differs from the recorded one in "
    "more than run controls; the change is appended to the workdir's config_history.jsonl.")

flags.mark_flags_as_required(["config", "workdir"])

SAVE_FAILED_STATUS = 1
USAGE_STATUS = 2
DIVERGED_STATUS = 3


def _fail(line: str, status: int = USAGE_STATUS) -> None:
    logging.debug("traceback of the error below", exc_info=True)
    print(line, file=sys.stderr, flush=True)
    sys.exit(status)


def _load_config_file(spec: str) -> Any:
    """The config of ``--config=path[:arg]`` without overrides (to name a bad override)."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_gnj_config_probe", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


_FLAG_FORMS = {"config": "config file[:variant]", "workdir": "directory"}


def describe_flag_error(error: Exception, argv: list[str]) -> str:
    """One ``error: ...`` line for a failure while parsing flags or loading the config."""
    config_args = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    config_arg = config_args[-1] if config_args else None
    base = None
    if config_arg is not None:
        try:
            base = _load_config_file(config_arg)
        except Exception as e:  # noqa: BLE001  (the config file itself is broken)
            why = " ".join(str(e).split()) or type(e).__name__
            return (f"error: --config = {config_arg!r}: cannot load the config file "
                    f"({type(e).__name__}: {why}); valid: an existing config file path[:variant] "
                    "whose get_config accepts the variant")
    if base is not None:
        keys = list(config_schema.flatten(base))
        for arg in argv:
            m = re.match(r"--config\.([^=]+)(?:=(.*))?$", arg)
            if m and m.group(1) not in keys and not any(k.startswith(m.group(1) + ".")
                                                        for k in keys):
                return (f"error: config.{m.group(1)} = {m.group(2)!r}: no such config key; "
                        f"{validate.suggest(m.group(1), keys)}valid keys: see the config file "
                        f"{config_arg.split(':')[0]}")
    text = " ".join(str(error).split())
    m = re.match(r"flag --([\w.]+)=(.*?): (.*)$", text)
    if m:
        flag, value, why = m.groups()
        if "must have a value other than None" in why:
            return f"error: --{flag} is missing; valid: --{flag}=<{_FLAG_FORMS.get(flag, 'value')}>"
        domain = config_schema.domain_of(flag.removeprefix("config."))
        valid = domain.describe() if domain is not None else "see --helpfull"
        name = flag if flag.startswith("config.") else f"--{flag}"
        return f"error: {name} = {value!r}: {why}; valid: {valid}"
    return f"error: {text}"


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with every failure reported as one line and exit status 2."""
    try:
        rest = flags.FLAGS(argv)
        _ = list(_CONFIG.value.keys())  # loads the config file, applies the overrides
    except Exception as e:  # noqa: BLE001  (SystemExit, e.g. from --help, passes through)
        _fail(describe_flag_error(e, argv))
    if len(rest) > 1:
        _fail(f"error: unexpected arguments {rest[1:]}; valid: only --flags")
    return rest


def outcome(error: BaseException, config: Any) -> tuple[str, int] | None:
    """``(last line, exit status)`` of a run that ended with ``error``; None: not ours (the
    traceback is shown)."""
    from gnj import checkpoint, interrupts
    from gnj.data import DatasetNotPreparedError

    if isinstance(error, validate.UsageError):
        return error.line(), USAGE_STATUS
    if isinstance(error, DatasetNotPreparedError):
        return (f"error: config.dataset.name = {config.dataset.name!r}: "
                f"{' '.join(str(error).split())}", USAGE_STATUS)
    if isinstance(error, interrupts.Diverged):
        return str(error), DIVERGED_STATUS
    if isinstance(error, interrupts.Preempted):
        return str(error), error.exit_status
    if isinstance(error, checkpoint.CheckpointSaveError):
        return f"error: {error}", SAVE_FAILED_STATUS
    if isinstance(error, KeyboardInterrupt):
        return ("interrupted (SIGINT) before the first training step; nothing was saved",
                128 + signal.SIGINT)
    return None


def main(argv: list[str]) -> None:
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax/TF info lines drown the progress output
        # A failed asynchronous save (disk full) is reported as one line by gnj.checkpoint;
        # orbax's writer tasks would also dump their tracebacks through asyncio's logger.
        std_logging.getLogger("asyncio").setLevel(std_logging.CRITICAL)
    from gnj import perf

    perf.apply()  # gnj's XLA defaults (docs/performance.md); before the first JAX computation
    from gnj import sharding

    config = _CONFIG.value
    try:
        workdir = validate.resolve_workdir(_WORKDIR.value)
        sharding.maybe_initialize_distributed(_MULTIHOST.value, _COORD.value, _NPROC.value,
                                              _PID.value)
        validate.check(config)
        run(config, workdir)
    except BaseException as e:  # noqa: BLE001  (mapped to a line and a status, or re-raised)
        result = outcome(e, config)
        if result is None:
            raise
        _fail(*result)


def run(config: Any, workdir: str) -> None:
    if _MODE.value == "train":
        from gnj import train

        result = train.train_and_evaluate(config, workdir, multihost=_MULTIHOST.value,
                                          allow_config_change=_ALLOW_CHANGE.value)
        print("final: " + " ".join(f"{k}={v:.4f}" for k, v in result.items()), flush=True)
    elif _MODE.value == "eval":
        from gnj import evaluate

        result = evaluate.evaluate_latest(config, workdir)
        print("eval: " + " ".join(f"{k}={v:.4f}" for k, v in result.items()), flush=True)
    else:
        from gnj.analysis import run as analysis_run

        analysis_run.run(config, workdir)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
