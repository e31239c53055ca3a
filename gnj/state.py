"""The training state pytree: everything a step reads and writes, nothing else."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax

BACKWARD_STATE = "backward_state"
"""Collection whose new value is its cotangent (state written by a layer's backward pass)."""

TRANSIENT_COLLECTIONS = ("intermediates", "perturbations")
"""Collections that are recomputed every call and never carried across steps."""

RNG_STREAMS = ("dropout", "noise")
"""RNG streams every training apply receives."""


def stream_rngs(key: jax.Array) -> dict[str, jax.Array]:
    """One key per RNG stream of :data:`RNG_STREAMS`, split from ``key``."""
    return dict(zip(RNG_STREAMS, jax.random.split(key, len(RNG_STREAMS))))


def path_str(path: tuple) -> str:
    """'/'-joined names of a pytree key path (``params/stage1_block0/conv1/kernel``)."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


@flax.struct.dataclass
class TrainState:
    """step · params · model_state (every non-param collection) · opt_state · rng."""

    step: jax.Array
    params: Any
    model_state: dict[str, Any]
    opt_state: Any
    rng: jax.Array

    def variables(self) -> dict[str, Any]:
        """The Flax variables dict of the model: ``{"params": ..., **model_state}``."""
        return {"params": self.params, **self.model_state}


def split_variables(variables: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``(params, model_state)`` from Flax variables, dropping transient collections."""
    variables = dict(variables)
    params = variables.pop("params", {})
    state = {k: v for k, v in variables.items() if k not in TRANSIENT_COLLECTIONS}
    return params, state
