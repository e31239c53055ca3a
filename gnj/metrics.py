"""One metric writer: TensorBoard event files (clu) + ``metrics.jsonl`` + a console line.

``metrics.jsonl`` holds one JSON object per logged step (``{"step": s, "train/loss": ..., ...}``;
eval metrics of that step are merged into the same object). On resume from step ``s`` the file is
first cut back to the records with ``step ≤ s`` (atomically, via a temporary file and
``os.replace``), so a run killed between a checkpoint and a later log line leaves neither
duplicated nor missing steps once it resumes. Only process 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax
import numpy as np


def _to_float(v: Any) -> float:
    v = float(np.asarray(v))
    return v if math.isfinite(v) else float("nan")


def truncate_jsonl(path: str, last_step: int) -> None:
    """Keep only records with ``step ≤ last_step`` (and drop a torn last line)."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill mid-write
            if record.get("step", math.inf) <= last_step:
                kept.append(json.dumps(record))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(k + "\n" for k in kept))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricWriter:
    """Writes scalars to TensorBoard, ``metrics.jsonl`` and the console."""

    def __init__(self, workdir: str, resume_step: int, total_steps: int, quiet: bool = False):
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
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()
        self._tb.write_scalars(step, values)
        if not self.quiet:
            eta = (self.total_steps - step) / rate if rate > 0 else float("nan")
            shown = " ".join(f"{k.split('/', 1)[-1] if k.startswith('train/') else k}="
                             f"{v:.4g}" for k, v in values.items() if not k.startswith("perf/"))
            print(f"step {step}/{self.total_steps} | {shown} | {rate:.2f} steps/s | "
                  f"ETA {_hms(eta)}", flush=True)
        return values

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
