"""Activations (docs/references.md#orthogonal-inits, #selu-epsilon): values against NumPy
formulas, the gain table, PReLU / sPReLU parameters and gradients, and SeLUv2's (λ, α) checked
by integrating its two fixed-point equations over the Gaussian with scipy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from gnj.nn import activations
from gnj.registry import ACTIVATIONS

X = np.linspace(-4.0, 4.0, 81)


def _apply(spec, x=X):
    module = ACTIVATIONS.lookup(spec)()
    variables = module.init(jax.random.PRNGKey(0), jnp.asarray(x))
    return np.asarray(module.apply(variables, jnp.asarray(x)), np.float64)


@pytest.mark.parametrize("spec,fn", [
    ("relu", lambda x: np.maximum(x, 0)),
    ("identity", lambda x: x),
    ("tanh", np.tanh),
    ("leaky_relu", lambda x: np.where(x >= 0, x, 0.01 * x)),
    ("leaky_relu(negative_slope=0.2)", lambda x: np.where(x >= 0, x, 0.2 * x)),
    ("elu", lambda x: np.where(x > 0, x, np.expm1(x))),
    ("elu(alpha=0.5)", lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    # SELU's published constants (Klambauer et al. 2017).
    ("selu", lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x))),
    ("relu6", lambda x: np.clip(x, 0, 6)),
    ("wn_scaled_relu", lambda x: math.sqrt(2 * math.pi / (math.pi - 1))
     * (np.maximum(x, 0) - 1 / math.sqrt(2 * math.pi))),
    ("prelu", lambda x: np.where(x >= 0, x, 0.25 * x)),
    ("sprelu", lambda x: np.where(x >= 0, x, 0.25 * x) / math.sqrt(1 + 0.25**2)),
])
def test_values(spec, fn):
    np.testing.assert_allclose(_apply(spec), fn(X), rtol=1e-6, atol=1e-6)


def _gauss_moment(g, var=1.0):
    """E[g(x)] for x ~ N(0, var), split at 0 where the activations have their kink."""
    pdf = stats.norm(0, math.sqrt(var)).pdf
    return sum(integrate.quad(lambda x: g(x) * pdf(x), a, b, epsabs=1e-13, epsrel=1e-13)[0]
               for a, b in ((-np.inf, 0), (0, np.inf)))


def test_wn_scaled_relu_is_zero_mean_unit_variance_for_standard_normal_input():
    c = math.sqrt(2 * math.pi / (math.pi - 1))
    f = lambda x: c * (max(x, 0.0) - 1 / math.sqrt(2 * math.pi))
    assert _gauss_moment(f) == pytest.approx(0.0, abs=1e-10)
    assert _gauss_moment(lambda x: f(x) ** 2) == pytest.approx(1.0, abs=1e-10)


def test_gain_table_and_every_activation_has_an_entry():
    s2 = math.sqrt(2)
    expected = {"relu": s2, "relu6": s2, "prelu": s2, "sprelu": s2, "tanh": 1.0, "linear": 1.0,
                "identity": 1.0, "none": 1.0, "elu": 1.0, "selu": 1.0, "seluv2": 1.0,
                "wn_scaled_relu": 1.0, "leaky_relu": math.sqrt(2 / (1 + 0.01**2)),
                "lrelu": math.sqrt(2 / (1 + 0.01**2))}
    missing = [name for name in ACTIVATIONS.names() if name not in activations._GAINS]
    assert not missing, f"activations without a registered gain: {missing}"
    for name, value in expected.items():
        assert activations.gain(name) == pytest.approx(value, rel=1e-12), name
    assert activations.gain("leaky_relu(negative_slope=0.3)") == pytest.approx(
        math.sqrt(2 / 1.09))
    assert activations.gain("lrelu(negative_slope=0.3)") == pytest.approx(math.sqrt(2 / 1.09))


def test_gain_of_unknown_activation_raises_with_the_valid_names():
    with pytest.raises(ValueError, match="swish"):
        activations.gain("swish")


def test_registered_gain_is_used():
    activations.register_gain("tanh", lambda kw: 5 / 3)
    try:
        assert activations.gain("tanh") == pytest.approx(5 / 3)
    finally:
        activations.register_gain("tanh", lambda kw: 1.0)


@pytest.mark.parametrize("normalized", [False, True])
def test_prelu_has_one_learnable_slope_and_its_gradient(normalized):
    module = ACTIVATIONS.lookup("sprelu" if normalized else "prelu")()
    x = jnp.asarray(X)
    variables = module.init(jax.random.PRNGKey(0), x)
    leaves = jax.tree_util.tree_leaves(variables["params"])
    assert len(leaves) == 1 and leaves[0].shape == () and float(leaves[0]) == 0.25
    a = 0.8  # beyond the reference's clamp(0, 0.5), which is a no-op [as-written]
    params = jax.tree_util.tree_map(lambda _: jnp.asarray(a), variables["params"])
    y = np.asarray(module.apply({"params": params}, x), np.float64)
    n = math.sqrt(1 + a * a) if normalized else 1.0
    np.testing.assert_allclose(y, np.where(X >= 0, X, a * X) / n, rtol=1e-6, atol=1e-7)
    grad = jax.grad(lambda p: jnp.sum(module.apply({"params": p}, x)))(params)
    # d/da of prelu(x, a)/√(1+a²): x/(1+a²)^{3/2} for x < 0, −a·x/(1+a²)^{3/2} for x ≥ 0.
    if normalized:
        expected = np.sum(np.where(X < 0, X, -a * X)) / (1 + a * a) ** 1.5
    else:
        expected = np.sum(np.where(X < 0, X, 0.0))
    assert float(jax.tree_util.tree_leaves(grad)[0]) == pytest.approx(expected, rel=1e-5)


def test_prelu_init_slope_kwarg():
    np.testing.assert_allclose(_apply("prelu(init_slope=0.1)"), np.where(X >= 0, X, 0.1 * X),
                               rtol=1e-6)


# A table of (λ, α) from an independent solve (docs/references.md#selu-epsilon), fixpoint q = 1.
SELU_TABLE = [(1.0, 0.0716, 1.050552, 1.673793), (1.0, 0.07, 1.060042, 1.640169),
              (1.0, 0.065, 1.089166, 1.538244), (1.0, 0.06, 1.117532, 1.440385),
              (1.0, 0.03, 1.274535, 0.893042), (2.000113, 0.03, 0.944117, 0.780245)]


@pytest.mark.parametrize("gamma,eps,lam,alpha", SELU_TABLE)
def test_seluv2_constants_match_the_reference_table(gamma, eps, lam, alpha):
    got_lam, got_alpha = activations.seluv2_constants(gamma, 1.0, eps)
    assert got_lam == pytest.approx(lam, abs=1e-5)
    assert got_alpha == pytest.approx(alpha, abs=1e-5)


@pytest.mark.parametrize("gamma,q,eps", [(1.0, 1.0, 0.07), (1.0, 1.0, 0.03),
                                         (2.000113, 1.0, 0.03), (1.5, 0.5, 0.02),
                                         (1.0, 3.0, 0.3)])
def test_seluv2_satisfies_both_fixed_point_equations_by_quadrature(gamma, q, eps):
    """γ·E[f′(x)²] = 1 + ε and E[f(x)²] = q for x ~ N(0, qγ), to 1e-8."""
    lam, alpha = activations.seluv2_constants(gamma, q, eps)
    f = lambda x: lam * (x if x > 0 else alpha * math.expm1(x))
    df = lambda x: lam * (1.0 if x > 0 else alpha * math.exp(x))
    assert gamma * _gauss_moment(lambda x: df(x) ** 2, q * gamma) == pytest.approx(1 + eps,
                                                                                   abs=1e-8)
    assert _gauss_moment(lambda x: f(x) ** 2, q * gamma) == pytest.approx(q, abs=1e-8)


def test_seluv2_forward_is_lambda_elu_alpha():
    lam, alpha = activations.seluv2_constants(2.000113, 1.0, 0.03)
    y = _apply("seluv2(gamma=2.000113, fixpoint=1.0, epsilon=0.03)")
    np.testing.assert_allclose(y, lam * np.where(X > 0, X, alpha * np.expm1(X)), rtol=1e-6,
                               atol=1e-7)


def test_seluv2_zero_epsilon_is_scaled_relu():
    """ε = 0: α = 0 and λ² = 2/γ, i.e. He's ReLU."""
    lam, alpha = activations.seluv2_constants(2.0, 1.0, 0.0)
    assert alpha == 0.0 and lam == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(epsilon=-0.01), r"epsilon=-0.01: ε < 0 would need α² < 0; valid: 0 ≤ epsilon < 0.15"),
    (dict(epsilon=0.2), r"epsilon=0.2: ε this large would need λ² ≤ 0; valid: 0 ≤ epsilon"),
    (dict(gamma=0.0), r"gamma=0.0; valid: > 0"),
    (dict(fixpoint=-1.0), r"fixpoint=-1.0; valid: > 0"),
])
def test_seluv2_without_solution_raises_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        activations.seluv2(**kwargs)


def test_seluv2_epsilon_bound_is_where_lambda_vanishes():
    """Just below the bound λ² → 0⁺ and α → ∞; just above, no solution (q = γ = 1)."""
    from scipy.special import erfcx

    e2, e1 = 0.5 * erfcx(math.sqrt(2)), 0.5 * erfcx(math.sqrt(0.5))
    bound = e2 / (e2 - 2 * e1 + 0.5) - 1
    lam, alpha = activations.seluv2_constants(1.0, 1.0, bound - 1e-6)
    assert lam < 0.01 and alpha > 100
    with pytest.raises(ValueError, match="no solution"):
        activations.seluv2_constants(1.0, 1.0, bound + 1e-6)


@pytest.mark.parametrize("name", ["prelu", "sprelu"])
def test_prelu_slope_is_created_in_param_dtype(name):
    x = jnp.linspace(-2.0, 2.0, 9)
    with jax.enable_x64(True):
        module = ACTIVATIONS.lookup(f"{name}(param_dtype='float64')")()
        v = module.init(jax.random.PRNGKey(0), x.astype(jnp.float64))
        assert v["params"]["slope"].dtype == jnp.float64
    module = ACTIVATIONS.lookup(f"{name}(param_dtype='bfloat16')")()
    assert module.init(jax.random.PRNGKey(0), x)["params"]["slope"].dtype == jnp.bfloat16
