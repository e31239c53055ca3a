"""Block moments of JJᵀ: how far a block's Jacobian is from norm-preserving
(docs/analysis.md#moments).

For the per-sample Jacobian J(x) of shape (m, n) (m = output size) and inputs x₁ … x_N, with φ
the normalised expected trace taken over the given inputs,

    φ(JJᵀ)      = (1/N) Σᵢ tr(J(xᵢ)J(xᵢ)ᵀ) / m
    φ((JJᵀ)²)   = (1/N) Σᵢ tr((J(xᵢ)J(xᵢ)ᵀ)²) / m
    spread      = φ((JJᵀ)²) − φ(JJᵀ)²

A block that preserves gradient norms has φ(JJᵀ) ≈ 1 and a small spread (and so, block by
block, does the network).

- :func:`exact_moments`: from explicit per-sample Jacobians (``gnj.analysis.jacobian``).
- :func:`hutchinson_moments`: matrix-free. Each input is linearised once (``jax.linearize``;
  ``jax.linear_transpose`` gives Jᵀ·); a Rademacher probe v (E vvᵀ = I) gives the unbiased
  terms ‖Jᵀv‖²/m for φ(JJᵀ) and ‖JJᵀv‖²/m for φ((JJᵀ)²). φ(JJᵀ)² is estimated without bias
  from products of independent probe means (across inputs, and across probes of one input for
  its own square). Standard errors are those of the probe noise, i.e. of the estimate around the
  exact value at these inputs: √(Σᵢ s²ᵢ/p)/N with sᵢ² the probe variance of input i (the spread's
  from the linearisation b − 2φ·a). One probe per input gives no standard error (NaN).
- :func:`block_moments`, :func:`network_moments`: every block of a model (at its real inputs)
  and the whole network (input → logits), exact where the Jacobians fit in ``exact_max_bytes``
  and matrix-free otherwise. Blocks with equal configurations share one compiled estimator.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gnj.analysis import blocks, jacobian

DEFAULT_EXACT_MAX_BYTES = 64 * 1024**2


def _check_probes(num_probes: int) -> None:
    if int(num_probes) <= 0:
        raise ValueError(f"num_probes must be > 0 (number of random probe vectors per input), "
                         f"got {num_probes}")


# ------------------------------------------------------------------------------------ exact


def exact_moments(jacobians: jax.Array) -> dict[str, Any]:
    """φ(JJᵀ), φ((JJᵀ)²) and the spread over the inputs, from (N, m, n) Jacobians."""
    with jax.default_matmul_precision("highest"):
        jjt = jnp.einsum("nij,nkj->nik", jacobians, jacobians)
        m = jacobians.shape[1]
        phi_i = jnp.trace(jjt, axis1=1, axis2=2) / m
        phi2_i = jnp.einsum("nij,nji->n", jjt, jjt) / m
    phi, phi2 = float(jnp.mean(phi_i)), float(jnp.mean(phi2_i))
    return {"phi": phi, "phi_se": 0.0, "phi2": phi2, "phi2_se": 0.0, "spread": phi2 - phi**2,
            "spread_se": 0.0, "method": "exact", "num_samples": int(jacobians.shape[0])}


# ------------------------------------------------------------------------------ Hutchinson


def probe_rng(key: Any = None) -> np.random.Generator:
    """A NumPy generator from an int seed, a JAX key (raw or typed) or None (seed 0).

    Probe vectors are drawn on the host: the estimators then compile no threefry kernel, whose
    CPU compile time dwarfs the rest for small maps.
    """
    if key is None:
        return np.random.default_rng(0)
    if isinstance(key, np.random.Generator):
        return key
    if isinstance(key, (int, np.integer)):
        return np.random.default_rng(int(key))
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key).astype(np.uint64).ravel().tolist())


def rademacher(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Float32 array of independent ±1 entries."""
    return (rng.integers(0, 2, size=shape, dtype=np.int8) * 2 - 1).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("f", "probe_batch"))
def probe_terms(f: Callable[[Any, jax.Array], jax.Array], params: Any, xs: jax.Array,
                probes: jax.Array, probe_batch: int = 16) -> tuple[jax.Array, jax.Array]:
    """(N, p) arrays of ‖Jᵀv‖²/m and ‖JJᵀv‖²/m for the per-sample map ``f(params, x)``.

    ``probes`` (N, p, *output shape) are the v's. ``f`` is static (hashable), so equal maps
    share one compilation. One linearisation per input; probes run in vmapped chunks of
    ``probe_batch``.
    """

    def one(x, vs):
        y, jvp = jax.linearize(lambda z: f(params, z), x)
        vjp = jax.linear_transpose(jvp, x)
        m = math.prod(y.shape)

        def probe(v):
            (jt_v,) = vjp(v.astype(y.dtype))
            jjt_v = jvp(jt_v)
            return jnp.sum(jt_v**2) / m, jnp.sum(jjt_v**2) / m

        return jax.lax.map(probe, vs, batch_size=max(1, min(probe_batch, vs.shape[0])))

    with jax.default_matmul_precision("highest"):
        return jax.vmap(one)(xs, probes)


def moments_from_probes(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Estimates and standard errors from (N, p) probe terms a = ‖Jᵀv‖²/m, b = ‖JJᵀv‖²/m."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n, p = a.shape
    a_bar = a.mean(1)
    phi, phi2 = float(a_bar.mean()), float(b.mean())
    if p >= 2:
        own_sq = (p**2 * a_bar**2 - (a**2).sum(1)) / (p * (p - 1))  # unbiased for φᵢ²
        phi_sq = (a_bar.sum() ** 2 - (a_bar**2).sum() + own_sq.sum()) / n**2
        se = lambda t: float(math.sqrt(max(t.var(1, ddof=1).sum(), 0.0) / p) / n)
        phi_se, phi2_se, spread_se = se(a), se(b), se(b - 2 * phi * a)
    else:
        phi_sq, phi_se, phi2_se, spread_se = phi**2, math.nan, math.nan, math.nan
    return {"phi": phi, "phi_se": phi_se, "phi2": phi2, "phi2_se": phi2_se,
            "spread": float(phi2 - phi_sq), "spread_se": spread_se, "method": "hutchinson",
            "num_samples": n, "num_probes": p}


def hutchinson_moments_fn(f: Callable[[Any, jax.Array], jax.Array], params: Any, xs: jax.Array,
                          num_probes: int = 16, key: Any = None, probe_batch: int = 16
                          ) -> dict[str, Any]:
    """Matrix-free moments of the per-sample map ``f(params, x)`` (``f`` hashable/static).

    ``key``: an int seed, a JAX key or a NumPy generator for the probes.
    """
    _check_probes(num_probes)
    out_shape = jax.eval_shape(f, params, xs[0]).shape
    probes = rademacher(probe_rng(key), (xs.shape[0], int(num_probes), *out_shape))
    a, b = probe_terms(f, params, xs, probes, int(probe_batch))
    return moments_from_probes(*jax.device_get((a, b)))


@dataclasses.dataclass(frozen=True)
class _Closure:
    fn: Callable[[jax.Array], jax.Array]

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        return self.fn(x)


def hutchinson_moments(f: Callable[[jax.Array], jax.Array], xs: jax.Array, num_probes: int = 16,
                       key: Any = None, probe_batch: int = 16) -> dict[str, Any]:
    """Matrix-free φ(JJᵀ), φ((JJᵀ)²), spread and their standard errors for per-sample ``f``."""
    return hutchinson_moments_fn(_Closure(f), None, xs, num_probes, key, probe_batch)


# ------------------------------------------------------------------- blocks and the network


@dataclasses.dataclass(frozen=True)
class BlockMap:
    """Per-sample map of an unbound block module: ``(variables, z) ↦ block(z[None])[0]``.

    Hashable, and equal for equal block configurations, so it can key a ``jit``.
    """

    module: nn.Module
    args: tuple = ()
    kwargs: tuple = ()

    @classmethod
    def of(cls, block: blocks.Block) -> BlockMap:
        return cls(block.module, block.args, tuple(sorted(block.kwargs.items())))

    def __call__(self, variables: Any, z: jax.Array) -> jax.Array:
        return self.module.apply(variables, z[None], *self.args, **dict(self.kwargs))[0]


@dataclasses.dataclass(frozen=True)
class ModelMap:
    """Per-sample input → logits map of a model in eval mode: ``(variables, x) ↦ logits``."""

    model: nn.Module

    def __call__(self, variables: Any, x: jax.Array) -> jax.Array:
        return self.model.apply(variables, x[None], train=False)[0]


@functools.partial(jax.jit, static_argnames=("f", "batch_size"))
def exact_jacobians(f: Callable[[Any, jax.Array], jax.Array], params: Any, xs: jax.Array,
                    batch_size: int = 8) -> jax.Array:
    """(N, out, in) Jacobians of the static per-sample map ``f(params, x)`` (jitted, cached)."""
    return jacobian.per_sample_jacobians(lambda z: f(params, z), xs, batch_size,
                                         max_bytes=2**62)


def fits(f: Callable[[Any, jax.Array], jax.Array], params: Any, xs: jax.Array,
         max_bytes: int) -> bool:
    """Whether the N exact Jacobians of ``f(params, ·)`` at ``xs`` take ≤ ``max_bytes``."""
    in_dim = math.prod(xs.shape[1:])
    out_dim = math.prod(jax.eval_shape(f, params, xs[0]).shape)
    return jacobian.jacobian_bytes(xs.shape[0], in_dim, out_dim) <= max_bytes


def moments(f: Callable[[Any, jax.Array], jax.Array], params: Any, xs: jax.Array,
            num_probes: int = 16, key: Any = None,
            exact_max_bytes: int = DEFAULT_EXACT_MAX_BYTES) -> dict[str, Any]:
    """Exact moments when the N Jacobians fit in ``exact_max_bytes``, Hutchinson otherwise."""
    _check_probes(num_probes)
    if fits(f, params, xs, exact_max_bytes):
        return exact_moments(exact_jacobians(f, params, xs))
    return hutchinson_moments_fn(f, params, xs, num_probes, key)


def block_moments(model: nn.Module, variables: Any, images: jax.Array, num_probes: int = 16,
                  key: Any = None, exact_max_bytes: int = DEFAULT_EXACT_MAX_BYTES,
                  names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Moments of every block (or of ``names``) at its real inputs for ``images``."""
    _check_probes(num_probes)
    rng = probe_rng(key)
    found = blocks.find_blocks(model, variables, images)
    for name in names or []:
        blocks.check_block(list(found), name, model)
    out = {}
    for name, block in found.items():
        if names is not None and name not in names:
            continue
        out[name] = moments(BlockMap.of(block), block.variables, block.input, num_probes, rng,
                            exact_max_bytes)
    return out


def network_moments(model: nn.Module, variables: Any, images: jax.Array, num_probes: int = 16,
                    key: Any = None, exact_max_bytes: int = DEFAULT_EXACT_MAX_BYTES
                    ) -> dict[str, Any]:
    """Moments of the whole network's input → logits Jacobian at ``images``."""
    return moments(ModelMap(model), variables, images, num_probes, key, exact_max_bytes)
