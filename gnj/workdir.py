"""A run owns its workdir: the lock file, the config record and its history.

- ``lock(workdir)``: ``<workdir>/gnj.lock`` holds the owner's pid and host. A second process is
  refused while the owner lives; a lock left by a dead process on this host is stale and taken
  over (with a note). ``--multihost`` processes are one run and take no lock.
- ``record_config(config, workdir)``: ``config.json`` is the config the run was started with and
  is never rewritten. A later start (a resume) whose config differs in anything but the run
  controls (``config_schema.RUN_CONTROLS``) is refused naming the keys, unless
  ``allow_config_change``; every accepted difference is appended to ``config_history.jsonl``.

See ``docs/reliability.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

from gnj import config_schema
from gnj.validate import UsageError

LOCK_FILE = "gnj.lock"
CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"
IDENTITY_KEYS = ("model", "dataset.name")
PRECISION_KEYS = ("dtype", "param_dtype")  # gnj/precision.py


class WorkdirError(UsageError):
    """The workdir cannot be used as asked (owned by another process, another run's, damaged)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_lock(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def make_dirs(workdir: str) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise WorkdirError(f"--workdir = {workdir!r}: cannot create it ({e.strerror}); valid: "
                           "a directory this user can write") from e


@contextlib.contextmanager
def lock(workdir: str, shared: bool = False) -> Iterator[None]:
    """Hold ``<workdir>/gnj.lock`` for the duration (nothing when ``shared``)."""
    make_dirs(workdir)
    if shared:
        yield
        return
    path = os.path.join(workdir, LOCK_FILE)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read_lock(path)
            if owner is None:  # torn (its writer died between create and write)
                if time.time() - os.path.getmtime(path) < 5:
                    time.sleep(0.2)
                    continue
            elif owner.get("host") != me["host"] or _alive(int(owner.get("pid", -1))):
                raise WorkdirError(
                    f"--workdir = {workdir!r}: in use by process {owner.get('pid')} on "
                    f"{owner.get('host')} ({path}); valid: a workdir no other run is using "
                    "(wait for it, use another --workdir, or delete the lock file if that "
                    "process is gone; --multihost for processes of one run)") from None
            print(f"note: taking over the stale lock of process "
                  f"{(owner or {}).get('pid', '?')} in {workdir}", file=sys.stderr, flush=True)
            stale = f"{path}.stale-{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, stale)
                os.remove(stale)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise WorkdirError(f"--workdir = {workdir!r}: cannot take its lock {path}; valid: a "
                           "workdir no other run is using")
    try:
        yield
    finally:
        if (_read_lock(path) or {}).get("pid") == me["pid"]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


# ----------------------------------------------------------------------------- finding runs

RUN_FILES = (CONFIG_FILE, "metrics.jsonl", os.path.join("analysis", "analysis.json"))
"""A directory holding any of these is a workdir."""
_NOT_RUNS = ("checkpoints", "tensorboard", "report", "analysis")


def natural_key(name: str) -> list[Any]:
    """Sort key reading digit runs as numbers (``block2`` before ``block10``)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def find_workdirs(root: str) -> list[str]:
    """Every workdir under ``root`` (itself included), in natural order; a workdir's own
    subdirectories (checkpoints, tensorboard, report, analysis) are not searched.

    Raises:
      FileNotFoundError: ``root`` is not a directory.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no directory {root!r}")
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted((d for d in dirnames if d not in _NOT_RUNS), key=natural_key)
        if any(os.path.exists(os.path.join(dirpath, f)) for f in RUN_FILES):
            found.append(dirpath)
    return sorted(found, key=natural_key)


# ----------------------------------------------------------------------------- config record


def _get(tree: dict[str, Any], dotted: str) -> Any:
    value: Any = tree
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def load_json_record(path: str) -> Any:
    """``json.load`` of a workdir file, any damage reported as one :class:`WorkdirError`."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise WorkdirError(
            f"{path} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:120]}); move it "
            "aside (mv it to a backup name) and run again: the run then records the current "
            "config, or use a fresh --workdir") from e


def _identity(record: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs the same run: the model (less its precision, which a resume may
    change with ``--allow_config_change``) and the dataset."""
    out = {k: _get(record, k) for k in IDENTITY_KEYS}
    if isinstance(out["model"], dict):
        out["model"] = {k: v for k, v in out["model"].items() if k not in PRECISION_KEYS}
    return out


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (recorded, now)}`` for every leaf that differs."""
    a, b = config_schema.flatten(old), config_schema.flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def record_config(config: Any, workdir: str, allow_change: bool = False,
                  writer: bool = True) -> None:
    """Write ``config.json`` on the first start; on later starts compare (see the module doc).
    Only a ``writer`` (process 0 of a multi-process run) writes; every process compares.

    Raises:
      WorkdirError: another model or dataset, or a changed config without ``allow_change``.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    new = json.loads(config.to_json_best_effort())
    if not os.path.exists(path):
        if writer:
            _write_json(path, new)
        return
    old = load_json_record(path)
    if not isinstance(old, dict):
        raise WorkdirError(f"{path} is damaged (not a JSON object); move it aside and run again")
    history = os.path.join(workdir, HISTORY_FILE)
    if os.path.exists(history):  # the latest accepted change is the reference
        with open(history, encoding="utf-8", errors="replace") as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    old = json.loads(line).get("config", old)
    identity_old, identity_new = _identity(old), _identity(new)
    if identity_old != identity_new:
        raise WorkdirError(
            f"--workdir = {workdir!r}: holds a run of a different model or dataset "
            f"(there: {identity_old}; now: {identity_new}); valid: another --workdir (nothing "
            "in this one was changed)")
    diff = config_differences(old, new)
    if not diff:
        return
    changed = [k for k in diff if not config_schema.is_run_control(k)]
    if changed and not allow_change:
        shown = ", ".join(f"{k}: {diff[k][0]!r} -> {diff[k][1]!r}" for k in changed[:6])
        raise WorkdirError(
            f"--workdir = {workdir!r}: resuming with a changed config ({shown}); valid: the "
            "recorded config (config.json), another --workdir, or --allow_config_change to "
            "continue with the change recorded in config_history.jsonl")
    if not writer:
        return
    with open(history, "a") as f:
        f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                            "changed": {k: list(v) for k, v in diff.items()},
                            "config": new}) + "\n")


def _write_json(path: str, value: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
