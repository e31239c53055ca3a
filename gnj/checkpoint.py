"""Orbax checkpoints of the whole :class:`~gnj.state.TrainState` in ``<workdir>/checkpoints``.

Saved every ``checkpoint_every_steps``, at the end, and on SIGTERM (preemption); the last
``keep_checkpoints`` are kept. Orbax writes each step into a temporary directory and renames it
when complete, so a run killed mid-save leaves no checkpoint that :func:`restore_latest` would pick
up. Restore reproduces the saved arrays bit for bit with the shardings of the target state.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def interval(save_every: int) -> int:
    """Steps between periodic saves (``checkpoint_every_steps`` ≤ 0 means every step)."""
    return max(int(save_every), 1)


def is_due(step: int, save_every: int) -> bool:
    """Whether ``step`` is a periodic save step (the loop skips the manager otherwise)."""
    return step % interval(save_every) == 0


def manager(workdir: str, save_every: int, keep: int, async_save: bool = True
            ) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=interval(save_every), max_to_keep=max(keep, 1), create=True,
        enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                 options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, force: bool = False) -> bool:
    return mngr.save(step, args=ocp.args.StandardSave(state), force=force)


def restore_latest(mngr: ocp.CheckpointManager, target: Any) -> tuple[Any, int] | None:
    """``(state, step)`` of the newest complete checkpoint, or None. ``target`` gives the
    structure, dtypes and shardings (concrete arrays or ``jax.ShapeDtypeStruct``s)."""
    step = mngr.latest_step()
    if step is None:
        return None
    return restore_latest_at(mngr, target, step)


def restore_variables_into(state: Any, path: str) -> Any:
    """``state`` with params and model state taken from the checkpoint at ``path``.

    ``path`` is a run's workdir, its ``checkpoints`` directory (the newest step is used) or one
    step directory. The optimizer state and step stay fresh: this starts a new run from trained
    weights (fine-tuning, or a different schedule), unlike resuming.
    """
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, "checkpoints")):
        path = os.path.join(path, "checkpoints")
    if os.path.basename(path).isdigit():
        directory, step = os.path.dirname(path), int(os.path.basename(path))
    else:
        directory, step = path, None
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"restore_from: no checkpoint directory at {path!r}")
    mngr = ocp.CheckpointManager(directory)
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"restore_from: no complete checkpoint in {directory!r}")
    restored, _ = restore_latest_at(mngr, state, step)
    return state.replace(params=restored.params, model_state=restored.model_state)


def restore_latest_at(mngr: ocp.CheckpointManager, target: Any, step: int) -> tuple[Any, int]:
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        target)
    try:
        return mngr.restore(step, args=ocp.args.StandardRestore(abstract)), step
    except Exception as e:  # a corrupt or incompatible checkpoint: say which and why
        raise RuntimeError(
            f"checkpoint at step {step} in {mngr.directory} cannot be restored into this "
            f"config's state ({type(e).__name__}: {e}). Use a fresh --workdir, or delete that "
            f"step directory to fall back to an older checkpoint.") from e
