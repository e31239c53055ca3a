"""Orbax checkpoints of the whole :class:`~gnj.state.TrainState` in ``<workdir>/checkpoints``.

Saved every ``checkpoint_every_steps``, at the end, and on preemption; the last
``keep_checkpoints`` are kept. Orbax writes each step into a temporary directory and renames it
when complete, so a run killed mid-save leaves no checkpoint that :func:`restore_latest` would pick
up. Restore reproduces the saved arrays bit for bit with the shardings of the target state.

Integrity (``docs/reliability.md``): the SHA-256 of every file of a checkpoint is written last,
into ``gnj_checksums.json`` inside the step directory, just before orbax renames it into place
(asynchronous saves) or right after the save (synchronous ones). :func:`restore_latest` verifies
the checksums, then restores; a checkpoint that fails its checksums is moved aside into
``<workdir>/checkpoints_damaged/`` (renamed, never deleted) with one warning, and the next older
one is tried. A checkpoint without the file (written by an older gnj) is restored unverified
(and moved aside if orbax cannot restore it); one whose checksums hold but that does not fit the
target state (another config) is an error, not damage: nothing is moved.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

CHECKSUM_FILE = "gnj_checksums.json"
WINDOW_FILE = "gnj_window.json"  # the loop's unlogged metric window at the saved step
DAMAGED_DIR = "checkpoints_damaged"


class CheckpointSaveError(Exception):
    """A save failed (disk full, unwritable directory): the message names the path."""


def interval(save_every: int) -> int:
    """Steps between periodic saves (``checkpoint_every_steps`` ≤ 0 means every step)."""
    return max(int(save_every), 1)


def is_due(step: int, save_every: int) -> bool:
    """Whether ``step`` is a periodic save step (the loop skips the manager otherwise)."""
    return step % interval(save_every) == 0


# ----------------------------------------------------------------------------- checksums


# Orbax's step bookkeeping, rewritten when it commits the step (after the checksums): a damage
# there makes orbax's own restore fail, which moves the checkpoint aside too.
_UNSUMMED = (CHECKSUM_FILE, "_CHECKPOINT_METADATA", "commit_success.txt")


def _files(step_dir: str) -> list[str]:
    out = []
    for root, _, names in os.walk(step_dir):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), step_dir)
            if rel not in _UNSUMMED:
                out.append(rel)
    return sorted(out)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checksums(step_dir: str) -> None:
    """Record the SHA-256 of every file under ``step_dir`` (atomically, last)."""
    sums = {rel: _sha256(os.path.join(step_dir, rel)) for rel in _files(step_dir)}
    tmp = os.path.join(step_dir, CHECKSUM_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(sums, f, indent=0, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(step_dir, CHECKSUM_FILE))


def verify_checksums(step_dir: str) -> str | None:
    """None if every recorded file is present and unchanged (or nothing was recorded), else
    what is wrong (the first differing files)."""
    path = os.path.join(step_dir, CHECKSUM_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            recorded = json.load(f)
    except (OSError, ValueError) as e:
        return f"unreadable {CHECKSUM_FILE} ({e})"
    bad = []
    for rel, digest in sorted(recorded.items()):
        full = os.path.join(step_dir, rel)
        if not os.path.exists(full):
            bad.append(f"{rel} missing")
        elif _sha256(full) != digest:
            bad.append(f"{rel} changed")
    extra = sorted(set(_files(step_dir)) - set(recorded))
    bad += [f"{rel} unexpected" for rel in extra]
    if bad:
        return "checksum mismatch: " + ", ".join(bad[:3]) + (" ..." if len(bad) > 3 else "")
    return None


# ----------------------------------------------------------------------------- the manager


class Checkpoints:
    """An orbax ``CheckpointManager`` whose checkpoints carry checksums and whose failed
    asynchronous saves are reported as :class:`CheckpointSaveError` at the next :meth:`check`
    (the loop calls it every step)."""

    def __init__(self, workdir: str, save_every: int, keep: int, async_save: bool = True):
        self.workdir = os.path.abspath(workdir)
        self.directory = os.path.join(self.workdir, "checkpoints")
        self.async_save = async_save
        self._pending: int | None = None
        self._pending_window: dict[str, Any] | None = None
        self._primary = jax.process_index() == 0
        async_options = ocp.AsyncOptions(post_finalization_callback=self._seal_pending)
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=interval(save_every), max_to_keep=max(keep, 1), create=True,
            enable_async_checkpointing=async_save,
            async_options=async_options if async_save else None)
        try:
            self.mngr = ocp.CheckpointManager(self.directory, options=options)
        except OSError as e:
            raise CheckpointSaveError(f"cannot create the checkpoint directory "
                                      f"{self.directory}: {e.strerror or e}") from e

    def _seal_pending(self) -> None:
        """Orbax's post-finalization callback: the step's files are complete in its temporary
        directory, which is renamed into place right after this returns."""
        if self._pending is None or not self._primary:
            return
        final = os.path.join(self.directory, str(self._pending))
        tmp = sorted(glob.glob(final + ".orbax-checkpoint-tmp*"), key=os.path.getmtime)
        self._seal(tmp[-1] if tmp else final)

    def _seal(self, step_dir: str) -> None:
        if self._pending_window is not None:
            with open(os.path.join(step_dir, WINDOW_FILE), "w") as f:
                json.dump(self._pending_window, f)
        write_checksums(step_dir)

    def save(self, step: int, state: Any, force: bool = False,
             window: dict[str, Any] | None = None) -> bool:
        """Save ``state`` as step ``step`` (asynchronously unless configured otherwise);
        ``window`` (JSON) is stored with it and returned by :meth:`window`."""
        self.wait()  # orbax would wait here too; the previous save's seal must see its step
        self._pending, self._pending_window = step, window
        try:
            saved = self.mngr.save(step, args=ocp.args.StandardSave(state), force=force)
            if saved and not self.async_save and self._primary:
                self._seal(os.path.join(self.directory, str(step)))
        except OSError as e:
            raise self._error(step, e) from e
        return saved

    def window(self, step: int) -> dict[str, Any] | None:
        """The ``window`` saved with step ``step`` (None if none)."""
        try:
            with open(os.path.join(self.directory, str(step), WINDOW_FILE)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _error(self, step: int, e: BaseException) -> CheckpointSaveError:
        why = getattr(e, "strerror", None) or str(e).strip().splitlines()[-1]
        return CheckpointSaveError(
            f"saving the checkpoint of step {step} into {self.directory} failed: {why}. "
            f"Earlier checkpoints there are intact; free space (or fix the directory) and run "
            f"the same command again to resume")

    def check(self) -> None:
        """Raise :class:`CheckpointSaveError` if an asynchronous save has failed."""
        try:
            self.mngr.check_for_errors()
        except Exception as e:  # noqa: BLE001  (orbax re-raises the writer thread's error)
            raise self._error(self._pending if self._pending is not None else -1, e) from e

    def wait(self) -> None:
        try:
            self.mngr.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._error(self._pending if self._pending is not None else -1, e) from e
        self.check()

    def close(self) -> None:
        self.wait()
        self.mngr.close()

    def all_steps(self) -> list[int]:
        return list(self.mngr.all_steps())

    def restore_latest(self, target: Any) -> tuple[Any, int] | None:
        """``(state, step)`` of the newest intact checkpoint, or None. Damaged ones (failing
        their checksums, or without checksums and failing the restore) are moved aside with a
        warning.

        Raises:
          RuntimeError: a checkpoint with valid checksums does not fit ``target``.
        """
        for step in sorted(self.mngr.all_steps(), reverse=True):
            step_dir = os.path.join(self.directory, str(step))
            problem = verify_checksums(step_dir)
            if problem is None:
                try:
                    return restore_latest_at(self.mngr, target, step)
                except RuntimeError as e:
                    if os.path.exists(os.path.join(step_dir, CHECKSUM_FILE)):
                        raise  # intact files that do not fit this config's state: not damage
                    problem = str(e.__cause__ or e).strip().splitlines()[0][:300]
            self._move_aside(step, step_dir, problem)
        return None

    def _move_aside(self, step: int, step_dir: str, problem: str) -> None:
        dest_root = os.path.join(self.workdir, DAMAGED_DIR)
        dest = os.path.join(dest_root, f"{step}-{time.strftime('%Y%m%dT%H%M%S')}")
        if self._primary:
            os.makedirs(dest_root, exist_ok=True)
            os.replace(step_dir, dest)
        print(f"warning: checkpoint of step {step} is damaged ({problem}); moved to {dest}; "
              "trying the next older one", file=sys.stderr, flush=True)
        self.mngr.reload()


def manager(workdir: str, save_every: int, keep: int, async_save: bool = True) -> Checkpoints:
    return Checkpoints(workdir, save_every, keep, async_save)


def restore_variables_into(state: Any, path: str) -> Any:
    """``state`` with params and model state taken from the checkpoint at ``path``.

    ``path`` is a run's workdir, its ``checkpoints`` directory (the newest step is used) or one
    step directory. The optimizer state and step stay fresh: this starts a new run from trained
    weights (fine-tuning, or a different schedule), unlike resuming. The checkpoint's checksums
    are verified (it is not moved: it belongs to another run).
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
    problem = verify_checksums(os.path.join(directory, str(step)))
    if problem is not None:
        raise RuntimeError(f"checkpoint at step {step} in {directory} is damaged: {problem}")
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
