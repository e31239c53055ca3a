"""Evaluate-only (the references' ``-e``): the latest checkpoint of a workdir on the eval split."""

from __future__ import annotations

import os

import ml_collections

from gnj import checkpoint, train


def evaluate_latest(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Eval loss/accuracy of the newest checkpoint in ``workdir`` (or of ``config.restore_from``).

    Nothing in the workdir is written.
    """
    exp = train.build_experiment(config)
    if config.get("pretrained", "") and not config.get("restore_from", "") and \
            not os.path.isdir(os.path.join(workdir, "checkpoints")):
        return exp.evaluate(exp.state)  # evaluate the loaded pretrained weights
    source = config.get("restore_from", "") or workdir
    if not os.path.isdir(os.path.join(os.path.abspath(source), "checkpoints")) and not \
            os.path.isdir(source):
        raise FileNotFoundError(f"eval: no checkpoints in {source!r}; train first or pass "
                                "--config.restore_from=<workdir or checkpoint dir>")
    state = checkpoint.restore_variables_into(exp.state, source)
    return exp.evaluate(state)
