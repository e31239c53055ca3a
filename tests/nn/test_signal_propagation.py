"""Signal propagation through plain nets built from the registered inits and activations.

q_l = mean squared activation after layer l (over batch and units), q_0 that of the input.
Plain MLP: 50 layers, width 256. Plain CNN: 20 layers of 3×3 convs, 8×8 maps, 32 channels,
circular padding (zero padding drains energy at the borders, which mean-field theory leaves out;
Xiao et al. 2018). Claims, and the regime each holds in:

- He + ReLU: E_W[q_{l+1} | x_l] = q_l exactly (E relu(h)² = σ²/2 with σ² = 2q_l), so the
  *ensemble* second moment is preserved. A single width-256 net drifts log-normally around it
  (Var log q_L ≈ 5L/n ≈ 1, Hanin & Rolnick 2018), so the fast tests check the per-layer ratio
  q_{l+1}/q_l averaged over layers and nets (≈ 1, vs ½ and 2 for the mismatched gains), and the
  slow test the ensemble mean of q_l/q_0 through depth over 256 nets.
- Orthogonal + tanh, gain 1: critical with the fixed point q* = 0, approached like 1/(2l):
  q_{l+1} ≈ q_l − 2q_l², so q_l ≈ q_0/(1 + 2lq_0). In the near-linear regime q_0 = 1e-3 that stays
  within 20 % over 50 layers (0.91); from q_0 = 1 it is not (q_5 < q_0/2, q_50 ≈ 0.01).
- SeLUv2 at its fixpoint q = 1 (weights N(0, 1/fan_in)·√γ): the length map has an attracting fixed
  point at 1, so q_l stays within 20 % of 1 through depth.
- Mismatched pairs move by far more than 2×: ReLU with gain 1 halves q per layer, gain 2 doubles
  it; tanh with gain √2 in the linear regime doubles it.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.nn import activations  # noqa: F401  (registers the layers)
from gnj.registry import ACTIVATIONS, INITS

SELU_1 = "seluv2(gamma=1.0, fixpoint=1.0, epsilon=0.03)"
SELU_2 = "seluv2(gamma=2.000113, fixpoint=1.0, epsilon=0.03)"


def _run(layer, x_shape, k_shape, depth, init, act, gain, x_var, nets, seed=0):
    """(nets, depth) array of q_l/q_0 for ``nets`` independent nets; ``layer(x, w)`` is the
    linear map, weights drawn by ``INITS[init](gain)`` with a fresh key per layer."""
    f = ACTIVATIONS.lookup(act)()
    initf = INITS.lookup(init, gain=gain)()

    def one(key):
        x = jax.random.normal(key, x_shape) * math.sqrt(x_var)

        def step(x, k):
            w = initf(k, k_shape)
            x = f.apply({}, layer(x, w))
            return x, jnp.mean(x**2)

        _, qs = jax.lax.scan(step, x, jax.random.split(jax.random.fold_in(key, 1), depth))
        return qs / jnp.mean(x**2)

    keys = jax.random.split(jax.random.PRNGKey(seed), nets)
    return np.asarray(jax.jit(jax.vmap(one))(keys), np.float64)


def _dense(x, w):
    return x @ w


def _conv(x, w):
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
    return jax.lax.conv_general_dilated(padded, w, (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def mlp(init, act, gain, x_var=1.0, nets=1, batch=16, depth=50, seed=0):
    return _run(_dense, (batch, 256), (256, 256), depth, init, act, gain, x_var, nets, seed)


def cnn(init, act, gain, x_var=1.0, nets=1, batch=2, depth=20, seed=0):
    return _run(_conv, (batch, 8, 8, 32), (3, 3, 32, 32), depth, init, act, gain, x_var, nets, seed)


def _layer_ratio(q):
    """Mean over nets and layers of q_{l+1}/q_l (q_0 = 1 after normalisation)."""
    full = np.concatenate([np.ones((len(q), 1)), q], axis=1)
    return float(np.mean(full[:, 1:] / full[:, :-1]))


@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_he_relu_preserves_the_second_moment_per_layer_and_mismatch_halves_or_doubles(net):
    run = mlp if net == "mlp" else cnn
    assert _layer_ratio(run("kaiming_normal", "relu", math.sqrt(2), nets=8)) == pytest.approx(
        1.0, abs=0.03)
    low, high = (run("kaiming_normal", "relu", g, nets=2) for g in (1.0, 2.0))
    assert _layer_ratio(low) == pytest.approx(0.5, abs=0.03)
    assert _layer_ratio(high) == pytest.approx(2.0, abs=0.1)
    # Over depth the mismatch is far beyond 2×: 2^∓depth up to the log-normal drift.
    depth = low.shape[1]
    assert np.mean(low[:, -1]) < 2.0 ** (-depth + 8)
    assert np.mean(high[:, -1]) > 2.0 ** (depth - 8)


@pytest.mark.slow
def test_he_relu_ensemble_second_moment_stays_within_20_percent_through_50_layers():
    q = mlp("kaiming_normal", "relu", math.sqrt(2), nets=256, batch=4)
    assert np.all(np.abs(q.mean(0) - 1) < 0.2)
    # ... while single nets drift log-normally (std of log q_50 ≈ √(5·50/256) ≈ 1).
    assert 0.5 < np.log(q[:, -1]).std() < 1.5


def test_orthogonal_tanh_small_input_regime_mlp():
    q0 = 1e-3
    q = mlp("orthogonal", "tanh", 1.0, x_var=q0)[0]
    assert np.all(np.abs(q - 1) < 0.2)
    # Mean-field recursion q_{l+1} = q_l − 2q_l² ⇒ q_l/q_0 ≈ 1/(1 + 2lq_0).
    depth = np.arange(1, 51)
    np.testing.assert_allclose(q, 1 / (1 + 2 * depth * q0), rtol=0.02)
    # Outside the linear regime the same pair is not norm preserving.
    assert mlp("orthogonal", "tanh", 1.0, x_var=1.0, depth=5)[0, -1] < 0.5
    # Mismatched gain √2 in the linear regime doubles q per layer.
    assert mlp("orthogonal", "tanh", math.sqrt(2), x_var=1e-4, depth=8)[0, -1] > 100


def test_delta_orthogonal_tanh_small_input_regime_cnn():
    q = cnn("delta_orthogonal", "tanh", 1.0, x_var=1e-3)[0]
    assert np.all(np.abs(q - 1) < 0.2)
    assert cnn("delta_orthogonal", "tanh", math.sqrt(2), x_var=1e-4, depth=10)[0, -1] > 100


@pytest.mark.parametrize("act,gamma", [(SELU_1, 1.0), (SELU_2, 2.000113)])
def test_seluv2_at_its_fixpoint_mlp(act, gamma):
    q = mlp("kaiming_normal", act, math.sqrt(gamma), nets=16, batch=8)
    assert np.all(np.abs(q.mean(0) - 1) < 0.2)


def test_seluv2_at_its_fixpoint_cnn_and_mismatched_gain_moves_off():
    q = cnn("kaiming_normal", SELU_1, 1.0, nets=8)
    assert np.all(np.abs(q.mean(0) - 1) < 0.2)
    # Constants solved for γ = 1 but weights with gain 2 (γ = 4): q leaves the fixpoint by > 2×.
    q = cnn("kaiming_normal", SELU_1, 2.0, nets=2)
    assert np.mean(q[:, -1]) > 2.0
