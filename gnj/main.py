"""Command-line entry point.

    python -m gnj.main --config=configs/default.py --workdir=runs/default
    python -m gnj.main --config=configs/default.py:cifar10 --config.optim.lr=0.05 --workdir=...
    python -m gnj.main --config=... --workdir=... --mode=analyze

The config is locked: overriding a key that does not exist is an error, not a silent no-op.
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (:arg).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "analyze", "eval"],
                          "train (resumes if the workdir has a checkpoint), analyze (Jacobian "
                          "analysis of the latest checkpoint or of the init), eval (evaluate the "
                          "latest checkpoint only).")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize().")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NPROC = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PID = flags.DEFINE_integer("process_id", None, "This process's id (multi-host).")

flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax/TF info lines drown the progress output
    from gnj import perf

    perf.apply()  # gnj's XLA defaults (docs/performance.md); before the first JAX computation
    from gnj import sharding

    sharding.maybe_initialize_distributed(_MULTIHOST.value, _COORD.value, _NPROC.value,
                                          _PID.value)
    config, workdir = _CONFIG.value, os.path.abspath(_WORKDIR.value)
    if _MODE.value == "train":
        from gnj import train

        result = train.train_and_evaluate(config, workdir)
        print("final: " + " ".join(f"{k}={v:.4f}" for k, v in result.items()), flush=True)
    elif _MODE.value == "eval":
        from gnj import evaluate

        result = evaluate.evaluate_latest(config, workdir)
        print("eval: " + " ".join(f"{k}={v:.4f}" for k, v in result.items()), flush=True)
    else:
        from gnj.analysis import run as analysis_run

        analysis_run.run(config, workdir)


if __name__ == "__main__":
    app.run(main)
