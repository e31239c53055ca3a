"""Mixed precision: ``config.model.dtype`` (compute) and ``config.model.param_dtype`` (storage).

One policy for every model, applied by the train and eval steps, so no model needs its own
dtype options:

- **parameters, optimizer state and norm statistics** are stored in ``param_dtype`` (float32 by
  default): the initial variables are cast to it before the optimizer state is made from them.
- **compute**: each step casts the floating parameters (only the ``params`` collection) and the
  preprocessed input to ``dtype``, so every matmul and convolution runs in ``dtype`` (Flax's
  ``Dense`` / ``Conv`` compute in the promoted dtype of input and kernel). Gradients flow back
  through the casts and arrive in ``param_dtype``; the optimizer update runs there.
- **norms** compute their statistics in at least float32 whatever the input dtype and keep their
  running statistics in their own variables (never cast), so ``batch_stats`` stay in
  ``param_dtype`` (``gnj/nn/norms.py`` conventions).
- **the loss, preprocessing and mixup** run in ``wide`` = the promotion of ``dtype`` with float32:
  float32 under bfloat16 compute, float64 under float64.

``dtype=bfloat16, param_dtype=float32`` is the usual mixed-precision recipe for GPUs and TPUs.
``dtype=float64, param_dtype=float64`` runs everything in float64 and needs 64-bit JAX
(``JAX_ENABLE_X64=1``); without it JAX would silently make float32 arrays, so it is refused.
Initial parameters are drawn by the initializers in float32 and then cast: a float64 run starts
from float32-representable weights and computes in float64 from there.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

FLOAT_DTYPES = ("float32", "bfloat16", "float16", "float64")


def _dtype(name: Any, key: str) -> jnp.dtype:
    text = name if isinstance(name, str) else jnp.dtype(name).name
    if text not in FLOAT_DTYPES:
        raise ValueError(f"config.model.{key}={name!r}; valid: {', '.join(FLOAT_DTYPES)}")
    return jnp.dtype(text)


@dataclasses.dataclass(frozen=True)
class Precision:
    """Compute and storage dtypes of one run (module docstring)."""

    dtype: jnp.dtype = jnp.dtype("float32")
    param_dtype: jnp.dtype = jnp.dtype("float32")

    def __post_init__(self):
        wants_x64 = jnp.dtype("float64") in (self.dtype, self.param_dtype)
        if wants_x64 and not jax.config.jax_enable_x64:
            raise ValueError(
                f"config.model.dtype={self.dtype.name}, param_dtype={self.param_dtype.name} need "
                "64-bit JAX: set JAX_ENABLE_X64=1 in the environment (or "
                "jax.config.update('jax_enable_x64', True) before anything else runs)")

    @property
    def wide(self) -> jnp.dtype:
        """The dtype of preprocessing, mixup and the loss: ``dtype`` promoted with float32."""
        return jnp.dtype(jnp.promote_types(self.dtype, jnp.float32))

    def compute(self, tree: Any) -> Any:
        """``tree`` with its floating leaves cast to the compute dtype."""
        return cast_floating(tree, self.dtype)

    def store(self, tree: Any) -> Any:
        """``tree`` with its floating leaves cast to the storage dtype."""
        return cast_floating(tree, self.param_dtype)


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Floating-point leaves of ``tree`` cast to ``dtype``; integer leaves (steps, keys) kept."""
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x,
        tree)


def from_config(model_config: Any) -> Precision:
    """The :class:`Precision` of a config's ``model`` section (float32 when the keys are absent)."""
    return Precision(_dtype(model_config.get("dtype", "float32") or "float32", "dtype"),
                     _dtype(model_config.get("param_dtype", "float32") or "float32",
                            "param_dtype"))


KEYS = ("dtype", "param_dtype")
"""The ``model`` config keys this module reads (``models.build`` does not pass them on)."""

FLOAT32 = Precision()
"""The default policy: float32 compute and storage."""
