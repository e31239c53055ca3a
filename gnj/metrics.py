"""One metric writer: TensorBoard event files (clu) + ``metrics.jsonl`` + a console line.

``metrics.jsonl`` holds one JSON object per logged step (``{"step": s, "train/loss": ..., ...}``;
eval metrics of that step are merged into the same object). On resume from step ``s`` the file is
first cut back to the records with ``step ≤ s`` (atomically, via a temporary file and
``os.replace``), so a run killed between a checkpoint and a later log line leaves neither
duplicated nor missing steps once it resumes. Only process 0 writes.

Non-finite numbers are written as the JSON strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` (strict JSON has no literal for them); :func:`read_jsonl` turns them back into
floats. A line that is not valid JSON, other than a last line torn by a kill, stops a resume with
one line naming the file and what to do (``docs/reliability.md``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from typing import Any

import numpy as np

NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _to_float(v: Any) -> float:
    return float(np.asarray(v))


def _json_number(v: float) -> float | str:
    """``v``, or its strict-JSON stand-in (``"NaN"``, ``"Infinity"``, ``"-Infinity"``)."""
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def dumps_record(record: dict[str, Any]) -> str:
    """One strict-JSON line (non-finite floats as strings; ``allow_nan=False`` checks it)."""
    out = {k: _json_number(v) if isinstance(v, float) else v for k, v in record.items()}
    return json.dumps(out, allow_nan=False)


def loads_record(line: str) -> dict[str, Any]:
    """A record of ``metrics.jsonl``, the non-finite stand-ins turned back into floats (bare
    ``NaN`` written by older versions is accepted too)."""
    record = json.loads(line)
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    return {k: NONFINITE.get(v, v) if isinstance(v, str) else v for k, v in record.items()}


def truncate_jsonl(path: str, last_step: int) -> None:
    """Keep only records with ``step ≤ last_step`` (and drop a torn last line).

    Raises:
      WorkdirError: a line other than the last is not a JSON record (the file is damaged).
    """
    from gnj.workdir import WorkdirError

    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        lines = [line for line in f.read().split(b"\n") if line.strip()]
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            record = loads_record(line.decode("utf-8"))
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError included
            if number == len(lines):
                continue  # a line torn by a kill mid-write
            raise WorkdirError(
                f"{path} is damaged at line {number} ({type(e).__name__}); move it aside (mv it "
                "to a backup name) to resume without the earlier records, or repair that "
                "line") from e
        if record.get("step", math.inf) <= last_step:
            kept.append(dumps_record(record))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(k + "\n" for k in kept))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Every record of a ``metrics.jsonl`` (non-finite stand-ins back as floats); a line that is
    not a JSON object (torn by a kill) is skipped."""
    records = []
    with open(path) as f:
        for line in f:
            if line.strip():
                with contextlib.suppress(ValueError):
                    records.append(loads_record(line))
    return records


class MetricWriter:
    """Writes scalars to TensorBoard, ``metrics.jsonl`` and the console."""

    def __init__(self, workdir: str, resume_step: int, total_steps: int, quiet: bool = False):
        import jax  # here: the record readers above stay importable without JAX (gnj.report)

        self.enabled = jax.process_index() == 0
        self.total_steps, self.quiet = total_steps, quiet
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if self.enabled:
            from clu import metric_writers  # imports TensorFlow; only on the writing host

            truncate_jsonl(self.path, resume_step)
            self._file = open(self.path, "a")
            self._tb = metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard"))
        self._t0, self._s0 = time.perf_counter(), resume_step

    def write(self, step: int, scalars: dict[str, Any], eval_seconds: float = 0.0
              ) -> dict[str, float]:
        """Write one record; returns the floats written.

        Adds ``perf/steps_per_sec``: training steps since the last record over the wall time
        since then less ``eval_seconds`` (evaluation is not training throughput; its time is
        logged as ``perf/eval_sec`` when > 0).
        """
        values = {k: _to_float(v) for k, v in scalars.items()}
        now = time.perf_counter()
        rate = (step - self._s0) / max(now - self._t0 - eval_seconds, 1e-9)
        self._t0, self._s0 = now, step
        values["perf/steps_per_sec"] = rate
        if eval_seconds > 0:
            values["perf/eval_sec"] = eval_seconds
        if not self.enabled:
            return values
        self._file.write(dumps_record({"step": step, **values}) + "\n")
        self._file.flush()
        self._tb.write_scalars(step, values)
        if not self.quiet:
            eta = (self.total_steps - step) / rate if rate > 0 else float("nan")
            shown = " ".join(f"{k.split('/', 1)[-1] if k.startswith('train/') else k}="
                             f"{v:.4g}" for k, v in values.items() if not k.startswith("perf/"))
            print(f"step {step}/{self.total_steps} | {shown} | {rate:.2f} steps/s | "
                  f"ETA {_hms(eta)}", flush=True)
        return values

    def write_event(self, step: int, event: str, **details: Any) -> None:
        """A non-metric record (``{"step": s, "event": "diverged", ...}``) in metrics.jsonl."""
        if self.enabled:
            self._file.write(dumps_record({"step": step, "event": event, **details}) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._tb.flush()
            self._tb.close()


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
