"""Matrix-free singular-value spectra of Jacobians: stochastic Lanczos quadrature (SLQ) by
Golub–Kahan bidiagonalisation (docs/analysis.md#spectrum).

For the per-sample Jacobian J (m × n) let A = J if m ≤ n and A = Jᵀ otherwise, so that the Gram
G = AAᵀ has the d = min(m, n) squared singular values of J as eigenvalues. From a Rademacher probe
u₁ = v/‖v‖, k steps of Golub–Kahan bidiagonalisation with full reorthogonalisation

    β₁u₁ = v,   αᵢvᵢ = Aᵀuᵢ − βᵢvᵢ₋₁,   βᵢ₊₁uᵢ₊₁ = Avᵢ − αᵢuᵢ

give the k × k lower-bidiagonal L (αᵢ on the diagonal, βᵢ₊₁ below it) with L Lᵀ = the Lanczos
tridiagonal of G started at u₁. With L = P diag(θ) Qᵀ, the Gauss quadrature

    u₁ᵀ g(√G) u₁ ≈ Σⱼ τⱼ g(θⱼ),   τⱼ = P₁ⱼ²

is exact for polynomials g(σ) = p(σ²) of degree < 2k in σ², and for every g when k = d. Since
E[u₁ᵀ g(√G) u₁] = tr g(√G)/d, averaging over probes and inputs estimates the spectral measure of
the singular values, μ = (1/d) Σₗ δ(σ − σₗ) ≈ mean over probes of Σⱼ τⱼ δ(σ − θⱼ), hence the mean
singular value Σ τθ and φ(JJᵀ) = (d/m) Σ τθ². Working on A rather than on G keeps the Ritz
values accurate in float32 (no squared condition number); each step costs one JVP and one VJP of
a single linearisation per input. Standard errors are those of the probe noise around the
exact value at these inputs (as in ``gnj.analysis.moments``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gnj.analysis import blocks, jacobian, moments
from gnj.analysis.moments import BlockMap, ModelMap, _Closure, probe_rng, rademacher


def _check(num_probes: int, num_steps: int) -> None:
    if int(num_probes) <= 0:
        raise ValueError(f"num_probes must be > 0 (number of random probe vectors per input), "
                         f"got {num_probes}")
    if int(num_steps) <= 0:
        raise ValueError(f"num_steps must be > 0 (Lanczos / Golub–Kahan steps), got {num_steps}")


def golub_kahan(matvec: Callable[[jax.Array], jax.Array],
                rmatvec: Callable[[jax.Array], jax.Array], u0: jax.Array, num_steps: int
                ) -> tuple[jax.Array, jax.Array]:
    """(α₁…α_k, β₂…β_k) of k Golub–Kahan steps on A from ``u0`` (flat), fully reorthogonalised.

    ``matvec`` is v ↦ Av (ℝⁿ → ℝᵐ), ``rmatvec`` u ↦ Aᵀu. Requires k ≤ min(m, n). A breakdown
    (an exactly invariant Krylov space) continues with zero vectors, whose Ritz values get zero
    quadrature weight.
    """
    m = u0.shape[0]
    n = jax.eval_shape(rmatvec, u0).shape[0]
    k = num_steps

    def orth(w, basis):  # twice is enough (Kahan–Parlett)
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
        return w

    def normalise(w):
        norm = jnp.linalg.norm(w)
        return norm, w / jnp.where(norm > 0, norm, 1.0)

    u1 = u0 / jnp.linalg.norm(u0)
    us = jnp.zeros((k, m), u0.dtype).at[0].set(u1)
    vs = jnp.zeros((k, n), u0.dtype)

    def step(i, carry):
        us, vs, alphas, betas = carry
        u = us[i]
        w = rmatvec(u) - betas[i] * vs[jnp.maximum(i - 1, 0)]
        alpha, v = normalise(orth(w, vs))
        vs = vs.at[i].set(v)
        w = matvec(v) - alpha * u
        beta, u_next = normalise(orth(w, us))
        us = jnp.where(i + 1 < k, us.at[jnp.minimum(i + 1, k - 1)].set(u_next), us)
        return us, vs, alphas.at[i].set(alpha), betas.at[i + 1].set(beta)

    init = (us, vs, jnp.zeros((k,), u0.dtype), jnp.zeros((k + 1,), u0.dtype))
    _, _, alphas, betas = jax.lax.fori_loop(0, k, step, init)
    return alphas, betas[1:k]


def quadrature(alphas: jax.Array, betas: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Gauss nodes θ (singular values of L) and weights τ = P₁ⱼ² of the bidiagonal L."""
    k = alphas.shape[-1]
    lower = jnp.zeros(alphas.shape[:-1] + (k, k), alphas.dtype)
    lower = lower.at[..., jnp.arange(k), jnp.arange(k)].set(alphas)
    lower = lower.at[..., jnp.arange(1, k), jnp.arange(k - 1)].set(betas)
    p, theta, _ = jnp.linalg.svd(lower)
    return theta, p[..., 0, :] ** 2


@functools.partial(jax.jit, static_argnames=("f", "num_steps", "probe_batch"))
def slq_nodes(f: Callable[[Any, jax.Array], jax.Array], params: Any, xs: jax.Array,
              probes: jax.Array, num_steps: int, probe_batch: int = 4
              ) -> tuple[jax.Array, jax.Array]:
    """(N, p, k) Gauss nodes (singular values) and weights for the per-sample map ``f(params, x)``.

    ``probes`` (N, p, d) start vectors, d = min(in, out); ``num_steps`` is capped at d (where
    the quadrature becomes exact).
    """

    def one(x, u0s):
        y, jvp = jax.linearize(lambda z: f(params, z), x)
        vjp = jax.linear_transpose(jvp, x)
        m, n = y.size, x.size
        j = lambda v: jnp.reshape(jvp(jnp.reshape(v, x.shape)), (-1,))
        jt = lambda u: jnp.reshape(vjp(jnp.reshape(u, y.shape))[0], (-1,))
        mv, rmv = (j, jt) if m <= n else (jt, j)
        k = min(num_steps, m, n)

        def probe(u0):
            return quadrature(*golub_kahan(mv, rmv, u0.astype(y.dtype), k))

        return jax.lax.map(probe, u0s, batch_size=max(1, min(probe_batch, u0s.shape[0])))

    with jax.default_matmul_precision("highest"):
        return jax.vmap(one)(xs, probes)


def summarize(nodes: np.ndarray, weights: np.ndarray, in_dim: int, out_dim: int
              ) -> dict[str, Any]:
    """Mean singular value and φ(JJᵀ) with probe-noise standard errors from SLQ nodes."""
    nodes, weights = np.asarray(nodes, np.float64), np.asarray(weights, np.float64)
    n, p = nodes.shape[:2]
    d = min(in_dim, out_dim)
    mean_sv = (weights * nodes).sum(-1)  # (N, p)
    phi = (weights * nodes**2).sum(-1) * d / out_dim

    def se(t):
        return float(math.sqrt(t.var(1, ddof=1).sum() / p) / n) if p >= 2 else math.nan

    return {"mean_sv": float(mean_sv.mean()), "mean_sv_se": se(mean_sv),
            "phi": float(phi.mean()), "phi_se": se(phi), "num_samples": n, "num_probes": p,
            "num_steps": int(nodes.shape[-1]), "dim": d}


def density(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray,
            bandwidth: float | None = None) -> np.ndarray:
    """Gaussian-smoothed spectral density of the singular values on ``grid`` (integrates to 1).

    ``bandwidth`` defaults to 2 % of the node range (at least 1e-3).
    """
    nodes = np.asarray(nodes, np.float64).reshape(-1)
    weights = np.asarray(weights, np.float64).reshape(-1)
    weights = weights / weights.sum()
    if bandwidth is None:
        bandwidth = max(0.02 * float(nodes.max() - nodes.min()), 1e-3)
    z = (np.asarray(grid, np.float64)[:, None] - nodes[None]) / bandwidth
    return (np.exp(-0.5 * z**2) @ weights) / (bandwidth * math.sqrt(2 * math.pi))


def slq_fn(f: Callable[[Any, jax.Array], jax.Array], params: Any, xs: jax.Array,
           num_probes: int = 8, num_steps: int = 32, key: Any = None,
           probe_batch: int = 4) -> dict[str, Any]:
    """SLQ summary plus ``nodes`` and ``weights`` for the static per-sample ``f(params, x)``.

    ``key``: an int seed, a JAX key or a NumPy generator for the Rademacher start vectors.
    """
    _check(num_probes, num_steps)
    in_dim = math.prod(xs.shape[1:])
    out_dim = math.prod(jax.eval_shape(f, params, xs[0]).shape)
    probes = rademacher(probe_rng(key), (xs.shape[0], int(num_probes), min(in_dim, out_dim)))
    nodes, weights = jax.device_get(slq_nodes(f, params, xs, probes, int(num_steps),
                                              int(probe_batch)))
    return {**summarize(nodes, weights, in_dim, out_dim), "method": "slq", "nodes": nodes,
            "weights": weights}


def slq(f: Callable[[jax.Array], jax.Array], xs: jax.Array, num_probes: int = 8,
        num_steps: int = 32, key: Any = None, probe_batch: int = 4
        ) -> dict[str, Any]:
    """SLQ of the per-sample map ``f(x)``: mean singular value, φ(JJᵀ), nodes and weights."""
    return slq_fn(_Closure(f), None, xs, num_probes, num_steps, key, probe_batch)


def exact_spectrum(singular_values: np.ndarray, out_dim: int) -> dict[str, Any]:
    """The SLQ-shaped summary from exact (N, d) singular values (one node per value, weight 1/d).

    No standard errors (0): nothing is estimated.
    """
    sv = np.asarray(singular_values, np.float64)
    n, d = sv.shape
    return {**exact_summary(sv, out_dim), "mean_sv_se": 0.0, "phi_se": 0.0, "num_samples": n,
            "dim": d, "method": "exact", "nodes": sv[:, None, :],
            "weights": np.full((n, 1, d), 1.0 / d)}


def spectrum_of(f: Callable[[Any, jax.Array], jax.Array], params: Any, xs: jax.Array,
                num_probes: int = 8, num_steps: int = 32, key: Any = None,
                exact_max_bytes: int = 0) -> dict[str, Any]:
    """Exact singular values when the N Jacobians fit in ``exact_max_bytes``, else SLQ."""
    _check(num_probes, num_steps)
    if moments.fits(f, params, xs, exact_max_bytes):
        jac = moments.exact_jacobians(f, params, xs)
        return exact_spectrum(jax.device_get(jacobian.singular_values(jac)), jac.shape[1])
    return slq_fn(f, params, xs, num_probes, num_steps, key)


def network_spectrum(model: nn.Module, variables: Any, images: jax.Array, num_probes: int = 8,
                     num_steps: int = 32, key: Any = None, exact_max_bytes: int = 0
                     ) -> dict[str, Any]:
    """Spectrum of the input → logits Jacobian (eval mode) at ``images`` (SLQ by default)."""
    return spectrum_of(ModelMap(model), variables, images, num_probes, num_steps, key,
                       exact_max_bytes)


def block_spectrum(model: nn.Module, variables: Any, images: jax.Array, name: str,
                   num_probes: int = 8, num_steps: int = 32, key: Any = None,
                   exact_max_bytes: int = 0) -> dict[str, Any]:
    """Spectrum of block ``name``'s Jacobian at its real inputs for ``images`` (SLQ by default)."""
    block = blocks.get_block(model, variables, images, name)
    return spectrum_of(BlockMap.of(block), block.variables, block.input, num_probes, num_steps,
                       key, exact_max_bytes)


def exact_summary(singular_values: np.ndarray, out_dim: int) -> dict[str, float]:
    """The same summary from exact singular values (N, d) (for comparison)."""
    sv = np.asarray(singular_values, np.float64)
    return {"mean_sv": float(sv.mean()),
            "phi": float((sv**2).sum(-1).mean() / out_dim)}
