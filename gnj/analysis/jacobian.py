"""Exact per-sample Jacobians and their singular values, chunked to bound memory.

For a per-sample map f (one example in, one example out), ``per_sample_jacobians(f, xs)`` gives
J_i = ∂f(x_i)/∂x_i flattened to (out, in) for every sample: forward mode (``jacfwd``, one JVP per
input coordinate) when in < out, reverse mode (``jacrev``, one VJP per output coordinate)
otherwise, mapped over samples with ``jax.lax.map(batch_size=...)`` (vmapped chunks).

:func:`model_jacobians` takes the whole model (input → logits), :func:`block_jacobians` one block
at its real input (``gnj.analysis.blocks``); both in eval mode. A request whose result would take
more than ``max_bytes`` (n·in·out·4 bytes) raises a ValueError naming the matrix-free estimator
to use instead. Everything runs under ``jax.default_matmul_precision("highest")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.analysis import blocks

DEFAULT_MAX_BYTES = 2 * 1024**3

MATRIX_FREE = ("use the matrix-free estimators instead: gnj.analysis.moments.hutchinson_moments "
               "(φ(JJᵀ) and spread) or gnj.analysis.spectrum.slq (spectral density, mean "
               "singular value)")


def jacobian_bytes(n: int, in_dim: int, out_dim: int) -> int:
    """Bytes of n float32 Jacobians of shape (out_dim, in_dim)."""
    return n * in_dim * out_dim * 4


def check_budget(n: int, in_dim: int, out_dim: int, max_bytes: int = DEFAULT_MAX_BYTES,
                 what: str = "function") -> None:
    """ValueError unless n (out × in) float32 Jacobians fit in ``max_bytes``."""
    need = jacobian_bytes(n, in_dim, out_dim)
    if need > max_bytes:
        raise ValueError(
            f"exact Jacobians of {what} need {need / 2**20:.1f} MiB ({n} × {out_dim} × {in_dim} "
            f"float32), over max_bytes = {max_bytes / 2**20:.1f} MiB; {MATRIX_FREE}")


def per_sample_jacobians(f: Callable[[jax.Array], jax.Array], xs: jax.Array,
                         batch_size: int = 8, max_bytes: int = DEFAULT_MAX_BYTES,
                         what: str = "function") -> jax.Array:
    """(n, out, in) Jacobians of the per-sample map ``f`` at each row ``xs[i]``."""
    in_dim = math.prod(xs.shape[1:])
    out_dim = math.prod(jax.eval_shape(f, xs[0]).shape)
    check_budget(xs.shape[0], in_dim, out_dim, max_bytes, what)
    flat = lambda v: jnp.reshape(f(jnp.reshape(v, xs.shape[1:])), (-1,))
    jac = jax.jacfwd(flat) if in_dim < out_dim else jax.jacrev(flat)
    with jax.default_matmul_precision("highest"):
        return jax.lax.map(jac, jnp.reshape(xs, (xs.shape[0], -1)),
                           batch_size=max(1, min(batch_size, xs.shape[0])))


def model_jacobians(model: nn.Module, variables: Any, images: jax.Array, batch_size: int = 8,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> jax.Array:
    """(n, classes, input size) Jacobians of the logits w.r.t. each input (eval mode)."""
    f = blocks.per_sample(lambda x: model.apply(variables, x, train=False))
    return per_sample_jacobians(f, images, batch_size, max_bytes, type(model).__name__)


def block_jacobians(model: nn.Module, variables: Any, images: jax.Array, name: str,
                    batch_size: int = 8, max_bytes: int = DEFAULT_MAX_BYTES) -> jax.Array:
    """(n, block out, block in) Jacobians of block ``name`` at its real inputs for ``images``."""
    block = blocks.get_block(model, variables, images, name)
    return per_sample_jacobians(blocks.per_sample(block.function()), block.input, batch_size,
                                max_bytes, f"block {name!r}")


def singular_values(jacobians: jax.Array) -> jax.Array:
    """Singular values (descending) of every (…, out, in) Jacobian, one batched SVD."""
    with jax.default_matmul_precision("highest"):
        return jnp.linalg.svd(jacobians, compute_uv=False)
