"""SymmetryNoise: forward noise of std ``scale``, independent gradient noise of std ``scale``,
identity in eval mode and at scale 0, fresh noise for fresh keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.nn.noise import SymmetryNoise, add_noise

N = 20_000  # std estimates within ~1.5 % (3σ of the sample std is 3/√(2N) ≈ 1.5 %)


def _apply(scale, x, train, rng):
    return SymmetryNoise(scale).apply({}, x, train, rngs={"noise": rng})


def test_forward_adds_gaussian_noise_with_the_given_std():
    x = jnp.linspace(-3.0, 3.0, N)
    y = _apply(0.3, x, True, jax.random.PRNGKey(0))
    d = np.asarray(y - x, np.float64)
    assert d.std() == pytest.approx(0.3, rel=0.02)
    assert abs(d.mean()) < 4 * 0.3 / np.sqrt(N)
    # Gaussian, not uniform etc.: fourth moment 3σ⁴.
    assert np.mean(d**4) / d.var() ** 2 == pytest.approx(3.0, rel=0.08)


def test_backward_adds_independent_gaussian_noise_to_the_gradient():
    x = jnp.zeros(N)
    cot = jnp.linspace(-1.0, 1.0, N)  # upstream gradient
    rng = jax.random.PRNGKey(1)
    y, vjp = jax.vjp(lambda x: _apply(0.5, x, True, rng), x)
    (gx,) = vjp(cot)
    grad_noise = np.asarray(gx - cot, np.float64)
    fwd_noise = np.asarray(y - x, np.float64)
    assert grad_noise.std() == pytest.approx(0.5, rel=0.02)
    assert abs(grad_noise.mean()) < 4 * 0.5 / np.sqrt(N)
    # Independent of the forward draw (|corr| of independent samples ~ 1/√N).
    assert abs(np.corrcoef(grad_noise, fwd_noise)[0, 1]) < 4 / np.sqrt(N)
    # The gradient noise does not depend on the upstream gradient: same key, other cotangent.
    (gx2,) = vjp(2 * cot)
    np.testing.assert_allclose(np.asarray(gx2 - 2 * cot), grad_noise, atol=1e-6)


def test_gradient_without_noise_is_the_identity_map():
    """add_noise's VJP with scale 0 passes the cotangent through unchanged."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    x = jnp.arange(5.0)
    g = jax.grad(lambda x: jnp.sum(jnp.sin(add_noise(x, k1, k2, 0.0))))(x)
    np.testing.assert_allclose(g, jnp.cos(x), rtol=1e-6)


@pytest.mark.parametrize("scale,train", [(0.0, True), (0.7, False), (0.0, False)])
def test_identity_in_eval_mode_and_at_scale_zero(scale, train):
    x = jax.random.normal(jax.random.PRNGKey(3), (4, 6))
    y, vjp = jax.vjp(lambda x: SymmetryNoise(scale).apply({}, x, train), x)  # no rng needed
    np.testing.assert_array_equal(y, x)
    cot = jnp.ones_like(x)
    np.testing.assert_array_equal(vjp(cot)[0], cot)


def test_different_keys_give_different_noise_and_same_key_the_same():
    x = jnp.zeros(256)
    a = _apply(1.0, x, True, jax.random.PRNGKey(4))
    b = _apply(1.0, x, True, jax.random.PRNGKey(5))
    c = _apply(1.0, x, True, jax.random.PRNGKey(4))
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.3
    np.testing.assert_array_equal(a, c)


def test_inside_jit_and_init_is_noise_free():
    module = SymmetryNoise(1.0)
    x = jnp.ones((3,))
    variables = module.init(jax.random.PRNGKey(0), x, True)
    assert variables == {}
    f = jax.jit(lambda x, rng: module.apply({}, x, True, rngs={"noise": rng}))
    y1, y2 = f(x, jax.random.PRNGKey(6)), f(x, jax.random.PRNGKey(7))
    assert not np.allclose(y1, x) and not np.allclose(y1, y2)


def test_functional_form_and_alias_match_the_module():
    """symmetry_noise(x, rng, scale) is add_noise with the two halves of ``rng``; zero scale is
    the identity; GradientNoise is the module's alias."""
    from gnj.nn.noise import GradientNoise, symmetry_noise

    assert GradientNoise is SymmetryNoise
    x = jnp.linspace(-1.0, 1.0, 16)
    rng = jax.random.PRNGKey(8)
    y = symmetry_noise(x, rng, 0.2)
    assert not np.allclose(y, x)
    k1, k2 = jax.random.split(rng)
    np.testing.assert_array_equal(y, add_noise(x, k1, k2, 0.2))
    np.testing.assert_array_equal(symmetry_noise(x, rng, 0.0), x)


@pytest.mark.parametrize("scale", [-0.1, float("nan")])
def test_negative_or_nan_scale_raises(scale):
    from gnj.nn.noise import symmetry_noise

    with pytest.raises(ValueError, match="valid: ≥ 0"):
        SymmetryNoise(scale).apply({}, jnp.zeros(3), True, rngs={"noise": jax.random.PRNGKey(0)})
    with pytest.raises(ValueError, match="symmetry_noise: scale"):
        symmetry_noise(jnp.zeros(3), jax.random.PRNGKey(0), scale)
