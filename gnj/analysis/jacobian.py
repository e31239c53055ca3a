"""Exact per-sample Jacobians and their singular values, chunked to bound memory.

``per_sample_jacobians(f, xs)`` gives J_i = ∂f(x_i)/∂x_i flattened to (out, in) for each sample,
forward mode when in < out and reverse mode otherwise, mapped over samples with
``jax.lax.map(batch_size=...)``. A request above ``max_bytes`` raises a ValueError naming the
matrix-free estimator to use instead. Everything runs at ``highest`` matmul precision.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

DEFAULT_MAX_BYTES = 2 * 1024**3


def check_budget(n: int, in_dim: int, out_dim: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    need = n * in_dim * out_dim * 4
    if need > max_bytes:
        raise ValueError(
            f"exact Jacobians need {need / 2**30:.2f} GiB ({n} × {out_dim} × {in_dim} floats), "
            f"over the budget of {max_bytes / 2**30:.2f} GiB; use the matrix-free estimators "
            "gnj.analysis.gne.hutchinson_moments (φ moments) or gnj.analysis.spectrum (density)")


def per_sample_jacobians(f: Callable[[jax.Array], jax.Array], xs: jax.Array,
                         batch_size: int = 8, max_bytes: int = DEFAULT_MAX_BYTES) -> jax.Array:
    """(n, out, in) Jacobians of the per-sample map ``f`` (single example in, single out)."""
    in_dim = math.prod(xs.shape[1:])
    out_shape = jax.eval_shape(f, xs[0]).shape
    out_dim = math.prod(out_shape)
    check_budget(xs.shape[0], in_dim, out_dim, max_bytes)
    flat = lambda v: jnp.reshape(f(jnp.reshape(v, xs.shape[1:])), (-1,))
    jac = jax.jacfwd(flat) if in_dim < out_dim else jax.jacrev(flat)
    with jax.default_matmul_precision("highest"):
        return jax.lax.map(jac, jnp.reshape(xs, (xs.shape[0], -1)), batch_size=batch_size)


def singular_values(jacobians: jax.Array) -> jax.Array:
    with jax.default_matmul_precision("highest"):
        return jnp.linalg.svd(jacobians, compute_uv=False)
