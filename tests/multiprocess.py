"""Launching ``python -m gnj.main`` as several ``jax.distributed`` processes on localhost.

Each process gets ``devices`` fake CPU devices (``XLA_FLAGS``) and joins a coordinator on a free
local port (CPU collectives go through gloo, JAX's default on CPU). A wrapper records, per
process, the training-set rows each step read, so tests can check that every process reads only
its own slice of the global batch. Processes still running when one fails, or at the timeout,
are killed, and every process dies with the test process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs gnj.main unchanged, after wrapping TrainBatches.local_batch to log (step, rows) to
# $GNJ_TEST_ROWS: the rows of the global batch this process gathered for that step.
_WRAPPER = r"""
import ctypes, json, os, runpy, signal, sys
try:  # die with the test process (Linux PR_SET_PDEATHSIG): a killed test leaves no run behind
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)
except (OSError, AttributeError):
    pass
from gnj.data import pipeline
_local_batch = pipeline.TrainBatches.local_batch
def local_batch(self, step):
    with open(os.environ["GNJ_TEST_ROWS"], "a") as f:
        f.write(json.dumps([step, self.indices(step)[self._slice].tolist()]) + "\n")
    return _local_batch(self, step)
pipeline.TrainBatches.local_batch = local_batch
sys.argv = ["gnj.main", *sys.argv[1:]]
runpy.run_module("gnj.main", run_name="__main__", alter_sys=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int, rows_file: str, processes: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["GNJ_TEST_ROWS"] = rows_file
    if processes > 1:
        # Every process compiles, none reads the persistent cache: JAX writes it from process 0
        # only and keys it per process, so process 0 would load its executables while the
        # others compile theirs, and on a loaded machine the others can then reach a new gloo
        # communicator more than gloo's fixed 30 s after process 0 (it gives up). Compiling
        # alike keeps the processes in step.
        env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    return env


def run_main(args: list[str], processes: int, devices: int, log_dir: str,
             timeout: float = 1800) -> list[str]:
    """Run ``gnj.main args`` as ``processes`` processes × ``devices`` devices; their stdouts.

    ``processes == 1`` runs without ``--multihost``. Row logs go to ``log_dir/rows<i>.jsonl``.
    Raises AssertionError (with the failing process's output) if any process fails.
    """
    os.makedirs(log_dir, exist_ok=True)
    dist = []
    if processes > 1:
        dist = ["--multihost", f"--coordinator_address=localhost:{free_port()}",
                f"--num_processes={processes}"]
    procs = []
    for i in range(processes):
        extra = [*dist, f"--process_id={i}"] if dist else []
        out = open(os.path.join(log_dir, f"out{i}.txt"), "w")  # noqa: SIM115
        procs.append((subprocess.Popen(
            [sys.executable, "-c", _WRAPPER, *args, *extra], cwd=REPO, stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(devices, os.path.join(log_dir, f"rows{i}.jsonl"), processes)),
            out))
    deadline = time.time() + timeout
    try:
        while any(p.poll() is None for p, _ in procs):
            failed = [p for p, _ in procs if p.poll() not in (None, 0)]
            if failed or time.time() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p, out in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            out.close()
    outputs = [open(os.path.join(log_dir, f"out{i}.txt")).read() for i in range(processes)]
    for i, (p, _) in enumerate(procs):
        if p.returncode != 0:
            raise AssertionError(f"process {i} of {processes} exited with {p.returncode}:\n"
                                 f"{outputs[i][-6000:]}")
    return outputs


def rows_read(log_dir: str, process: int) -> dict[int, list[int]]:
    """``{step: rows}`` that process ``process`` gathered (the last launch's wins)."""
    with open(os.path.join(log_dir, f"rows{process}.jsonl")) as f:
        return {step: rows for step, rows in map(json.loads, f)}


def restore_on_host(workdir: str, step: int) -> dict:
    """The checkpoint of ``step`` in ``workdir`` as arrays on this process's first device,
    whatever mesh wrote it (orbax needs a target of the reader's topology)."""
    import jax
    import orbax.checkpoint as ocp

    path = os.path.join(workdir, "checkpoints", str(step), "default")
    checkpointer = ocp.StandardCheckpointer()
    metadata = checkpointer.metadata(path).item_metadata
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          metadata.tree)
    return checkpointer.restore(path, target)
