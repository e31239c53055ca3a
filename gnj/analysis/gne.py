"""Gradient-norm-equality moments of a Jacobian (Chen et al.; REFERENCE.md §1).

For J of shape (m, n): φ(JJᵀ) = tr(JJᵀ)/m and the spread φ((JJᵀ)²) − φ(JJᵀ)². GNE asks for
φ(JJᵀ) ≈ 1 and a small spread for every block.

Exact: from the per-sample Jacobians. Matrix-free: Hutchinson with Rademacher probes v,
tr(JJᵀ) = E‖Jᵀv‖² and tr((JJᵀ)²) = E‖JJᵀv‖², from one linearization per input
(``jax.linearize`` gives J·; its transpose gives Jᵀ·), averaged over probes and samples, with the
standard error of that mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp


def exact_moments(jacobians: jax.Array) -> dict[str, float]:
    """φ and spread averaged over samples, from (n, m, in) Jacobians."""
    with jax.default_matmul_precision("highest"):
        jjt = jnp.einsum("nij,nkj->nik", jacobians, jacobians)
        m = jacobians.shape[1]
        phi = jnp.trace(jjt, axis1=1, axis2=2) / m
        phi2 = jnp.einsum("nij,nji->n", jjt, jjt) / m
    return {"phi": float(jnp.mean(phi)), "spread": float(jnp.mean(phi2 - phi**2))}


def hutchinson_moments(f: Callable[[jax.Array], jax.Array], xs: jax.Array, num_probes: int = 16,
                       key: jax.Array | None = None) -> dict[str, float]:
    """Matrix-free φ(JJᵀ), spread and their standard errors for the per-sample map ``f``.

    Each sample is linearised once; each probe v ~ Rademacher(m) costs one Jᵀ and one J product.
    The spread uses the product of the two per-sample means, so its estimate is slightly biased
    for few probes (the bias is below the reported standard error for the probe counts used).
    """
    if num_probes <= 0:
        raise ValueError(f"num_probes must be > 0, got {num_probes}")
    key = jax.random.PRNGKey(0) if key is None else key

    def one(x, k):
        y, jvp = jax.linearize(f, x)
        vjp = jax.linear_transpose(jvp, x)
        m = math.prod(y.shape)

        def probe(kk):
            v = jax.random.rademacher(kk, y.shape, y.dtype)
            jt_v = vjp(v)[0]
            jjt_v = jvp(jt_v)
            return jnp.sum(jt_v**2) / m, jnp.sum(jjt_v**2) / m

        a, b = jax.lax.map(probe, jax.random.split(k, num_probes))
        return a, b

    with jax.default_matmul_precision("highest"):
        a, b = jax.jit(jax.vmap(one))(xs, jax.random.split(key, xs.shape[0]))
    n = a.size
    phi, phi2 = jnp.mean(a), jnp.mean(b)
    se = lambda t: float(jnp.std(t) / math.sqrt(max(n - 1, 1)))
    spread_samples = b - 2 * phi * a  # linearisation of phi2 − phi² for the error
    return {"phi": float(phi), "phi_se": se(a), "spread": float(phi2 - phi**2),
            "spread_se": se(spread_samples), "phi2": float(phi2), "phi2_se": se(b)}
