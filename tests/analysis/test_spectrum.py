"""Stochastic Lanczos (Golub–Kahan) quadrature vs exact spectra."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.analysis import blocks, jacobian, moments, spectrum
from gnj.models import build


def _numpy_quadratic_form(a, u, g):
    """uᵀ g(√(AAᵀ)) u / ‖u‖² from the eigendecomposition of AAᵀ."""
    lam, q = np.linalg.eigh(a @ a.T)
    c = q.T @ (u / np.linalg.norm(u))
    return float(np.sum(c**2 * g(np.sqrt(np.clip(lam, 0, None)))))


@pytest.mark.parametrize("shape", [(6, 9), (9, 6)])
def test_golub_kahan_quadrature_is_exact_at_full_depth_and_for_low_degree(shape):
    rng = np.random.default_rng(0)
    a = rng.normal(size=shape)
    a_op = a if shape[0] <= shape[1] else a.T  # the side whose Gram has no structural zeros
    d = min(shape)
    u = rng.normal(size=(a_op.shape[0],))
    with jax.enable_x64(True):
        aj = jnp.asarray(a_op)
        alphas, betas = spectrum.golub_kahan(lambda v: aj @ v, lambda w: aj.T @ w,
                                             jnp.asarray(u), d)
        theta, tau = map(np.asarray, spectrum.quadrature(alphas, betas))
        # k = d: exact for every function, e.g. √σ and the log.
        for g in (np.sqrt, lambda s: np.log(s + 0.1), lambda s: s):
            assert np.sum(tau * g(theta)) == pytest.approx(_numpy_quadratic_form(a_op, u, g),
                                                           rel=1e-10)
        np.testing.assert_allclose(np.sort(theta), np.linalg.svd(a, compute_uv=False)[::-1],
                                   rtol=1e-10)
        # k = 2: exact for polynomials in σ² of degree < 4, e.g. σ² and σ⁶.
        alphas, betas = spectrum.golub_kahan(lambda v: aj @ v, lambda w: aj.T @ w,
                                             jnp.asarray(u), 2)
        theta, tau = map(np.asarray, spectrum.quadrature(alphas, betas))
    for power in (2, 6):
        assert np.sum(tau * theta**power) == pytest.approx(
            _numpy_quadratic_form(a_op, u, lambda s, p=power: s**p), rel=1e-9)


def test_golub_kahan_survives_an_invariant_krylov_space():
    # A rank-2 operator: after 2 steps the Krylov space is exhausted (β = 0); the extra Ritz
    # values must carry zero weight and the quadrature stay exact.
    a = np.zeros((5, 5))
    a[0, 0], a[1, 1] = 2.0, 0.5
    u = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
    with jax.enable_x64(True):
        aj = jnp.asarray(a)
        theta, tau = map(np.asarray, spectrum.quadrature(*spectrum.golub_kahan(
            lambda v: aj @ v, lambda w: aj.T @ w, jnp.asarray(u), 4)))
    assert np.all(np.isfinite(theta)) and np.sum(tau) == pytest.approx(1.0)
    assert np.sum(tau * theta) == pytest.approx((2.0 + 0.5) / 2, rel=1e-12)


def _check_slq_against_exact(f, params, xs, num_probes=32, num_steps=64, seed=3):
    # Exact values from plain jax.jacrev Jacobians and NumPy's SVD (not gnj's code).
    one = jax.jit(jax.jacrev(f, argnums=1))
    m = int(np.prod(jax.eval_shape(f, params, xs[0]).shape))
    jac_np = np.stack([np.asarray(one(params, x), np.float64).reshape(m, -1) for x in xs])
    sv = np.linalg.svd(jac_np, compute_uv=False)
    exact = {"mean_sv": sv.mean(), "phi": np.mean((sv**2).sum(-1) / m)}
    jac = jacobian.per_sample_jacobians(lambda z: f(params, z), xs)
    assert spectrum.exact_summary(np.asarray(jacobian.singular_values(jac)), m)["mean_sv"] == (
        pytest.approx(exact["mean_sv"], rel=1e-4))
    est = spectrum.slq_fn(f, params, xs, num_probes, num_steps, seed)
    assert est["mean_sv_se"] > 0
    assert abs(est["mean_sv"] - exact["mean_sv"]) < 3 * est["mean_sv_se"]
    assert abs(est["phi"] - exact["phi"]) < 3 * est["phi_se"]
    # φ from the quadrature equals the exact GNE moment's estimator family: compare to moments.
    assert exact["phi"] == pytest.approx(moments.exact_moments(jac)["phi"], rel=1e-5)
    # The density integrates to 1 and puts its mass where the exact singular values are.
    grid = np.linspace(-0.3 * sv.max(), 1.3 * sv.max(), 400)
    dens = spectrum.density(est["nodes"], est["weights"], grid, bandwidth=0.05 * sv.max())
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=0.02)
    mean_from_density = np.trapezoid(dens * grid, grid) / np.trapezoid(dens, grid)
    assert mean_from_density == pytest.approx(exact["mean_sv"], rel=0.1)
    return est, exact


def test_slq_agrees_with_exact_on_a_small_mlp():
    model = build({"name": "mlp", "hidden": (10, 10), "act": "tanh"}, 6)
    xs = jax.random.normal(jax.random.PRNGKey(0), (4, 12))
    v = model.init(jax.random.PRNGKey(1), xs)
    est, _ = _check_slq_against_exact(moments.ModelMap(model), v, xs, num_steps=3)
    assert est["num_steps"] == 3 and est["dim"] == 6


def test_slq_agrees_with_exact_on_a_convnet_block():
    model = build({"name": "resnet_cifar", "depth": 8, "width": 4}, 10)
    images = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    v = model.init(jax.random.PRNGKey(1), images)
    b = blocks.find_blocks(model, v, images)["stage3_block0"]  # (4, 4, 8) → (2, 2, 16): d = 64
    est, _ = _check_slq_against_exact(moments.BlockMap.of(b), b.variables, b.input, num_probes=16,
                                      num_steps=12)
    assert est["dim"] == 64 and est["num_steps"] == 12


@pytest.mark.slow
def test_network_spectrum_of_a_convnet_agrees_with_exact():
    model = build({"name": "resnet_cifar", "depth": 8, "width": 4}, 10)
    images = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3))
    v = model.init(jax.random.PRNGKey(1), images)
    est = spectrum.network_spectrum(model, v, images, num_probes=32, num_steps=10, key=4)
    sv = np.asarray(jacobian.singular_values(jacobian.model_jacobians(model, v, images)))
    assert abs(est["mean_sv"] - sv.mean()) < 3 * est["mean_sv_se"]
    assert abs(est["phi"] - np.mean((sv.astype(np.float64) ** 2).sum(-1) / 10)) < 3 * est["phi_se"]


def test_orthogonal_map_has_all_singular_values_one():
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(8, 8)))
    w = jnp.asarray(q, jnp.float32)
    est = spectrum.slq(lambda x: w @ x, jnp.zeros((2, 8)), num_probes=3, num_steps=5, key=0)
    np.testing.assert_allclose(est["nodes"], 1.0, atol=1e-5)
    assert est["mean_sv"] == pytest.approx(1.0, abs=1e-6) and est["phi"] == pytest.approx(1.0)


def test_bad_probe_and_step_counts():
    f = lambda x: 2 * x
    for probes in (0, -3):
        with pytest.raises(ValueError, match=f"num_probes must be > 0.*got {probes}"):
            spectrum.slq(f, jnp.ones((2, 3)), num_probes=probes)
    with pytest.raises(ValueError, match="num_steps must be > 0"):
        spectrum.slq(f, jnp.ones((2, 3)), num_steps=0)


def test_mean_singular_value_of_a_scaled_rectangular_map():
    # J = c·[I 0] (3 × 5): singular values all c; SLQ works on the 3 × 3 Gram, no zero modes.
    c = 1.7
    w = jnp.asarray(c * np.eye(3, 5), jnp.float32)
    est = spectrum.slq(lambda x: w @ x, jnp.zeros((2, 5)), num_probes=2, num_steps=3, key=0)
    assert est["mean_sv"] == pytest.approx(c, rel=1e-6)
    assert est["phi"] == pytest.approx(c**2, rel=1e-6)
    est_t = spectrum.slq(lambda x: w.T @ x, jnp.zeros((2, 3)), num_probes=2, num_steps=3, key=0)
    assert est_t["mean_sv"] == pytest.approx(c, rel=1e-6)
    assert est_t["phi"] == pytest.approx(c**2 * 3 / 5, rel=1e-6)  # tr(JJᵀ)/m with m = 5
    assert math.isfinite(est_t["mean_sv_se"])
