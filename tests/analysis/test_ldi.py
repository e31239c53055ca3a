"""LDI: NumPy re-derivations of the layer-wise Jacobian singular values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.analysis import ldi


def test_ldi_of_one_linear_layer_is_its_mean_singular_value():
    w = np.random.default_rng(0).normal(size=(5, 7))
    with jax.enable_x64(True):
        got = ldi.ldi_of_layers([ldi.Layer(jnp.asarray(w))], act="elu", num_samples=3)
    sv = np.linalg.svd(w, compute_uv=False)
    assert got["ldi_mean"] == pytest.approx(sv.mean(), rel=1e-12)
    assert got["ldi_std"] == pytest.approx(np.tile(sv, 3).std(ddof=1), rel=1e-12)  # torch .std()


def two_layer_elu_chain(act_derivative) -> tuple[dict, np.ndarray]:
    """A random 3 → 4 → 2 chain with ELU after the first layer: its weights and inputs, and the
    singular values of every per-sample layer Jacobian, φ' given by ``act_derivative``."""
    rng = np.random.default_rng(1)
    w0, b0 = rng.normal(size=(4, 3)), rng.normal(size=4)
    w1, b1 = rng.normal(size=(2, 4)), rng.normal(size=2)
    x = rng.normal(size=(6, 3))
    svs = []
    for xi in x:
        z0 = w0 @ xi + b0  # h = elu(z0); logits = w1 h + b1 (no φ after the last layer)
        svs.append(np.linalg.svd(np.diag(act_derivative(z0)) @ w0, compute_uv=False))
        svs.append(np.linalg.svd(w1, compute_uv=False))
    return dict(w0=w0, b0=b0, w1=w1, b1=b1, x=x), np.concatenate(svs)


def chain_layers(chain: dict) -> list:
    return ldi.dense_chain_layers([jnp.asarray(chain["w0"]), jnp.asarray(chain["w1"])],
                                  [jnp.asarray(chain["b0"]), jnp.asarray(chain["b1"])],
                                  jnp.asarray(chain["x"]), jax.nn.elu)


def test_ldi_of_a_two_layer_elu_chain_matches_numpy():
    chain, svs = two_layer_elu_chain(lambda z: np.where(z > 0, 1.0, np.exp(z)))
    with jax.enable_x64(True):
        got = ldi.ldi_of_layers(chain_layers(chain), act="elu")
    assert got["ldi_mean"] == pytest.approx(svs.mean(), rel=1e-12)
    assert got["ldi_std"] == pytest.approx(svs.std(ddof=1), rel=1e-12)


def test_derivatives():
    z = jnp.array([-1.0, 0.5])
    np.testing.assert_allclose(ldi.derivative("elu")(z), [np.exp(-1.0), 1.0], rtol=1e-6)
    np.testing.assert_allclose(ldi.derivative("leaky_relu(negative_slope=0.2)")(z), [0.2, 1.0])
    with pytest.raises(ValueError, match="activation 'swish'"):
        ldi.derivative("swish")


def test_ldi_is_jittable_and_batched():
    rng = np.random.default_rng(2)
    jacs = [jnp.asarray(rng.normal(size=(7, 3, 4)), jnp.float32)]
    mean, std = jax.jit(ldi.ldi_arrays)(jacs)
    sv = np.linalg.svd(np.asarray(jacs[0], np.float64), compute_uv=False)
    assert float(mean) == pytest.approx(sv.mean(), rel=1e-5)
    assert float(std) == pytest.approx(sv.std(ddof=1), rel=1e-4)
