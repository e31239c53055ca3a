"""Device mesh and shardings: one 1-D ``'data'`` axis over every device of every host.

Parameters and optimizer state are replicated (``P()``); batches are split along their leading
axis (``P('data')``). This is ``jax.jit`` with ``NamedSharding`` (pjit): the same step runs on one
CPU, on 8 fake CPU devices, on many GPUs, and on many hosts after
:func:`maybe_initialize_distributed`.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def maybe_initialize_distributed(enabled: bool, coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> None:
    """``jax.distributed.initialize`` for multi-host runs (no-op when not ``enabled``).

    Under SLURM the arguments are auto-detected; elsewhere the coordinator address
    (``host:port``), process count and id must be given (flags or ``JAX_COORDINATOR_ADDRESS``...).
    """
    if not enabled:
        return
    in_slurm = "SLURM_JOB_ID" in os.environ
    address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not in_slurm and not address:
        raise ValueError(
            "multi-host run without a coordinator address: pass --coordinator_address=host:port "
            "(and --num_processes, --process_id) or run under SLURM")
    kwargs = {}
    if address:
        kwargs = dict(coordinator_address=address, num_processes=num_processes,
                      process_id=process_id)
    jax.distributed.initialize(**kwargs)


def make_mesh() -> Mesh:
    """A 1-D mesh over all devices, axis ``'data'``, with Auto axis types."""
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, what: str = "batch_size") -> None:
    """A global batch must split evenly over the devices."""
    n = jax.device_count()
    if batch_size % n:
        raise ValueError(f"{what} {batch_size} is not divisible by the device count {n}; "
                         f"use a multiple of {n}")


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Host-local numpy slices → global arrays sharded over ``'data'``."""
    sharding = batch_sharded(mesh)
    if jax.process_count() == 1:  # the local batch is the global one: a plain transfer
        return jax.device_put(local, sharding)  # (0.29 vs 0.43 ms per digits batch here)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
