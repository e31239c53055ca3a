"""Initializers and activations: orthogonality, scales, SeLUv2's fixed-point equations, gains."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from gnj.nn import activations, inits
from gnj.registry import ACTIVATIONS, INITS


def _torch_flat(w):
    """Flax kernel → PyTorch's flattened (out, in·kh·kw)."""
    w = np.asarray(w)
    if w.ndim == 4:
        return np.transpose(w, (3, 2, 0, 1)).reshape(w.shape[3], -1)
    return w.T


@pytest.mark.parametrize("shape", [(6, 6), (8, 3), (3, 8), (3, 3, 4, 5), (3, 3, 8, 80),
                                   (1, 1, 16, 4)])
def test_orthogonal_rows_or_columns_orthonormal_times_gain(shape):
    w = _torch_flat(INITS.lookup("orthogonal(gain=1.5)")()(jax.random.PRNGKey(0), shape))
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    np.testing.assert_allclose(gram, 1.5**2 * np.eye(len(gram)), atol=1e-5)


@pytest.mark.parametrize("cin,cout", [(4, 4), (4, 8), (8, 4)])
def test_delta_orthogonal_centre_tap_only(cin, cout):
    w = np.asarray(inits.delta_orthogonal(2.0)(jax.random.PRNGKey(1), (3, 3, cin, cout)))
    centre = w[1, 1]
    rest = w.copy()
    rest[1, 1] = 0
    assert not rest.any()
    scale = 2.0 * math.sqrt(cout / cin)
    q = centre / scale
    gram = q.T @ q if cin >= cout else q @ q.T
    np.testing.assert_allclose(gram, np.eye(len(gram)), atol=1e-5)


@pytest.mark.parametrize("name,mode", [("kaiming_normal", "fan_in"), ("kaiming_normal", "fan_out"),
                                       ("kaiming_uniform", "fan_in")])
def test_kaiming_std(name, mode):
    shape = (3, 3, 64, 128)
    w = INITS.lookup(f"{name}(gain=1.4142, mode='{mode}')")()(jax.random.PRNGKey(0), shape)
    fan = 9 * (64 if mode == "fan_in" else 128)
    assert np.std(np.asarray(w)) == pytest.approx(1.4142 / math.sqrt(fan), rel=0.03)


def test_const_avg_averages_channels():
    w = inits.const_avg()(jax.random.PRNGKey(0), (3, 3, 4, 2))
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 5, 5, 4))
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(y[..., 0], x.mean(-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y[..., 1], x.mean(-1), rtol=1e-5, atol=1e-6)


def test_fixup_factors_cifar_resnet56():
    assert inits.fixup_scale(27, 2, "cifar", p=2) == pytest.approx(0.19245, abs=1e-5)
    # L^(−p/(2m)) = 27^(−0.375) = 0.29056 (REFERENCE.md rounds it to 0.2903)
    assert inits.fixup_scale(27, 2, "cifar", p=1.5) == pytest.approx(27 ** -0.375, rel=1e-12)
    assert inits.fixup_scale(27, 2, "cifar", p=1.5) == pytest.approx(0.2903, abs=5e-4)
    assert inits.fixup_scale(16, 3, "original") == pytest.approx(16 ** -0.25)
    assert inits.fixup_scale(16, 3, "ours") == pytest.approx(16 ** (-1 / 3))
    assert inits.fixup_scale(8, 2, "ours") == pytest.approx(8 ** (-1 / 1.5))


@pytest.mark.parametrize("gamma,eps,lam,alpha", [
    (1.0, 0.0716, 1.050552, 1.673793), (1.0, 0.07, 1.060042, 1.640169),
    (1.0, 0.065, 1.089166, 1.538244), (1.0, 0.06, 1.117532, 1.440385),
    (1.0, 0.03, 1.274535, 0.893042), (2.000113, 0.03, 0.944117, 0.780245)])
def test_seluv2_solves_both_fixed_point_equations(gamma, eps, lam, alpha):
    got_lam, got_alpha = activations.seluv2_constants(gamma, 1.0, eps)
    assert got_lam == pytest.approx(lam, abs=1e-5) and got_alpha == pytest.approx(alpha, abs=1e-5)
    v = 1.0 * gamma
    pdf = stats.norm(0, math.sqrt(v)).pdf
    f = lambda x: got_lam * (x if x > 0 else got_alpha * (math.exp(x) - 1))
    df = lambda x: got_lam * (1.0 if x > 0 else got_alpha * math.exp(x))
    quad = lambda g: sum(integrate.quad(lambda x: g(x) * pdf(x), a, b, epsabs=1e-13,
                                        epsrel=1e-13)[0] for a, b in ((-np.inf, 0), (0, np.inf)))
    assert gamma * quad(lambda x: df(x) ** 2) == pytest.approx(1 + eps, abs=1e-8)
    assert quad(lambda x: f(x) ** 2) == pytest.approx(1.0, abs=1e-8)


def test_seluv2_without_solution_raises():
    with pytest.raises(ValueError, match="seluv2: no solution for gamma=1.0.*epsilon=-0.9"):
        activations.seluv2_constants(1.0, 1.0, -0.9)


def test_gain_table():
    assert activations.gain("relu") == pytest.approx(math.sqrt(2))
    assert activations.gain("tanh") == 1.0
    assert activations.gain("leaky_relu(negative_slope=0.18)") == pytest.approx(
        math.sqrt(2 / (1 + 0.18**2)))
    assert activations.gain("sprelu") == pytest.approx(math.sqrt(2))


def test_activation_values():
    x = jnp.array([-2.0, -0.5, 0.0, 1.5])
    apply = lambda spec: ACTIVATIONS.lookup(spec)().apply({}, x) if spec not in (
        "prelu", "sprelu") else None
    np.testing.assert_allclose(apply("leaky_relu(negative_slope=0.1)"), [-0.2, -0.05, 0, 1.5])
    c = math.sqrt(2 * math.pi / (math.pi - 1))
    np.testing.assert_allclose(apply("wn_scaled_relu"),
                               c * (np.maximum(np.asarray(x), 0) - 1 / math.sqrt(2 * math.pi)),
                               rtol=1e-6)
    act = ACTIVATIONS.lookup("sprelu")()
    v = act.init(jax.random.PRNGKey(0), x)
    a = 0.25
    xn = np.asarray(x)
    expected = np.where(xn >= 0, xn, a * xn) / math.sqrt(1 + a * a)
    np.testing.assert_allclose(act.apply(v, x), expected,
                               rtol=1e-6)


def _propagate(depth, width, init, act, gain, x_var=1.0, nets=8):
    """Mean squared activation after each layer, averaged over ``nets`` random networks (the
    mean-field quantity; one finite-width net drifts log-normally around it)."""
    runs = [_propagate_one(depth, width, init, act, gain, x_var, s) for s in range(nets)]
    return float(x_var), np.mean(runs, axis=0)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _propagate_one(depth, width, init, act, gain, x_var, seed):
    key = jax.random.PRNGKey(seed)
    x = jax.random.normal(key, (64, width)) * math.sqrt(x_var)
    f = ACTIVATIONS.lookup(act)()
    make = INITS.lookup(init, gain=gain)()
    ws = jax.vmap(lambda k: make(k, (width, width)))(jax.random.split(key, depth + 1)[1:])

    def layer(x, w):
        x = f.apply({}, x @ w)
        return x, jnp.mean(x**2)

    return jax.lax.scan(layer, x, ws)[1]


def test_signal_propagation_mlp_50_layers():
    # He + ReLU: the second moment of the post-activation is preserved (= q0/2·2 per layer).
    q0, qs = _propagate(50, 1024, "kaiming_normal", "relu", math.sqrt(2), nets=16)
    assert np.all(np.abs(qs / qs[0] - 1) < 0.2)  # post-ReLU moment: q0/2 after every layer
    # SeLUv2 at its fixpoint q = 1 with N(0, 1/fan_in) weights: E[f²] stays at 1.
    q0, qs = _propagate(50, 512, "kaiming_normal",
                        "seluv2(gamma=1.0, fixpoint=1.0, epsilon=0.03)", 1.0)
    assert np.all(np.abs(qs - 1.0) < 0.2)
    # Orthogonal + tanh (gain 1) is critical with the fixed point q* = 0, approached only like
    # 1/(2l): from q0 = 1e-3 the second moment stays within 20 % over 50 layers.
    q0, qs = _propagate(50, 256, "orthogonal", "tanh", 1.0, x_var=1e-3)
    assert np.all(np.abs(qs / q0 - 1) < 0.2)
    # Mismatched: gain 1 with ReLU halves the second moment every layer; He gain with tanh
    # in the linear regime doubles it.
    _, qs = _propagate(50, 256, "kaiming_normal", "relu", 1.0)
    assert qs[-1] / qs[0] < 1e-6
    q0, qs = _propagate(10, 256, "orthogonal", "tanh", math.sqrt(2), x_var=1e-4)
    assert qs[-1] / q0 > 100


def _propagate_cnn(depth, init, act, gain, x_var=1.0, nets=4, width=256):
    """As _propagate for a plain 3×3 CNN on 8×8 maps with circular padding (zero padding would
    drain energy at the borders, which mean-field theory leaves out; Xiao et al. 2018)."""
    return np.mean([_cnn_one(depth, init, act, gain, x_var, width, s) for s in range(nets)], 0)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _cnn_one(depth, init, act, gain, x_var, width, seed):
    key = jax.random.PRNGKey(seed)
    x = jax.random.normal(key, (2, 8, 8, width)) * math.sqrt(x_var)
    f = ACTIVATIONS.lookup(act)()
    make = INITS.lookup(init, gain=gain)()
    ws = jax.vmap(lambda k: make(k, (3, 3, width, width)))(jax.random.split(key, depth + 1)[1:])

    def layer(x, w):
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
        x = f.apply({}, jax.lax.conv_general_dilated(
            padded, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")))
        return x, jnp.mean(x**2)

    return jax.lax.scan(layer, x, ws)[1]


def test_signal_propagation_cnn_20_layers():
    # He + ReLU conv (fan_in = 9·32): the post-ReLU second moment stays at its first value.
    qs = _propagate_cnn(20, "kaiming_normal", "relu", math.sqrt(2))
    assert np.all(np.abs(qs / qs[0] - 1) < 0.2)
    # Delta-orthogonal + tanh (gain 1), small inputs: a per-pixel orthogonal map, preserved.
    qs = _propagate_cnn(20, "delta_orthogonal", "tanh", 1.0, x_var=1e-3)
    assert np.all(np.abs(qs / 1e-3 - 1) < 0.2)
    # SeLUv2 at its fixpoint q = 1 with N(0, 1/fan_in) kernels.
    qs = _propagate_cnn(20, "kaiming_normal", "seluv2(gamma=1.0, fixpoint=1.0, epsilon=0.03)", 1.0)
    assert np.all(np.abs(qs - 1.0) < 0.2)
    # Mismatched: gain 1 with ReLU vanishes (×1/2 per layer), gain 2 with ReLU explodes.
    assert _propagate_cnn(20, "kaiming_normal", "relu", 1.0, nets=1)[-1] < 1e-4
    assert _propagate_cnn(20, "kaiming_normal", "relu", 2.0, nets=1)[-1] > 1e4
