"""LDI (Bhardwaj et al.): NumPy re-derivations of the layer-wise Jacobian singular values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.analysis import ldi
from gnj.models import build

ELU = lambda z: np.where(z > 0, z, np.exp(z) - 1)
D_ELU = {"correct": lambda z: np.where(z > 0, 1.0, np.exp(z)),
         "reference": lambda z: np.where(z > 0, np.exp(z), 0.0)}  # the reference's [bug]


def test_ldi_of_one_linear_layer_is_its_mean_singular_value():
    w = np.random.default_rng(0).normal(size=(5, 7))
    with jax.enable_x64(True):
        got = ldi.ldi_of_layers([ldi.Layer(jnp.asarray(w))], act="elu", num_samples=3)
    sv = np.linalg.svd(w, compute_uv=False)
    assert got["ldi_mean"] == pytest.approx(sv.mean(), rel=1e-12)
    assert got["ldi_std"] == pytest.approx(np.tile(sv, 3).std(ddof=1), rel=1e-12)  # torch .std()


@pytest.mark.parametrize("quirk", ["correct", "reference"])
def test_ldi_of_a_two_layer_elu_chain_matches_numpy(quirk):
    rng = np.random.default_rng(1)
    w0, b0 = rng.normal(size=(4, 3)), rng.normal(size=4)
    w1, b1 = rng.normal(size=(2, 4)), rng.normal(size=2)
    x = rng.normal(size=(6, 3))
    with jax.enable_x64(True):
        layers = ldi.dense_chain_layers([jnp.asarray(w0), jnp.asarray(w1)],
                                        [jnp.asarray(b0), jnp.asarray(b1)], jnp.asarray(x),
                                        jax.nn.elu)
        got = ldi.ldi_of_layers(layers, act="elu", elu_derivative=quirk)
    d = D_ELU[quirk]
    svs = []
    for xi in x:
        z0 = w0 @ xi + b0  # h = elu(z0); logits = w1 h + b1 (no φ after the last layer)
        svs.append(np.linalg.svd(np.diag(d(z0)) @ w0, compute_uv=False))
        svs.append(np.linalg.svd(w1, compute_uv=False))
    svs = np.concatenate(svs)
    assert got["ldi_mean"] == pytest.approx(svs.mean(), rel=1e-12)
    assert got["ldi_std"] == pytest.approx(svs.std(ddof=1), rel=1e-12)


def test_the_quirk_differs_from_the_correct_derivative():
    z = jnp.array([-1.0, 0.5])
    np.testing.assert_allclose(ldi.derivative("elu")(z), [np.exp(-1.0), 1.0], rtol=1e-6)
    np.testing.assert_allclose(ldi.derivative("elu", "reference")(z), [0.0, np.exp(0.5)],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="elu_derivative 'buggy'; valid: correct, reference"):
        ldi.derivative("elu", "buggy")
    with pytest.raises(ValueError, match="activation 'swish'"):
        ldi.derivative("swish")


@pytest.mark.parametrize("quirk", ["correct", "reference"])
def test_ldi_of_dense_mlp_matches_numpy(quirk):
    from gnj.proj.nn_mass import dense_mlp

    model = build({"name": "dense_mlp", "width": 4, "depth": 4, "tc": 3, "topology_seed": 1}, 3)
    x = np.random.default_rng(0).normal(size=(5, 6))
    with jax.enable_x64(True):
        v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 6)))
        v = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), v)  # params are float32
        got = ldi.ldi(ldi.dense_mlp_jacobians(model, v, jnp.asarray(x), quirk))
    p = jax.tree.map(np.asarray, v["params"])
    d = D_ELU[quirk]
    W = lambda j: p[f"layer{j}"]["kernel"].T
    links = dense_mlp.sample_links(4, 4, 3, 1)
    svs = []
    for xi in x:
        z0 = W(0) @ xi + p["layer0"]["bias"]
        o = [ELU(z0), None]
        o[1] = W(1) @ o[0] + p["layer1"]["bias"]
        jac = [np.diag(d(z0)) @ W(0), W(1)]
        for j in (2, 3):
            pool = np.concatenate(o[j - 2::-1])
            inp = np.concatenate([o[j - 1], pool[links[j - 2]]])
            jac.append(W(j) @ np.diag(d(inp)))  # the last layer too (reference convention)
            o.append(W(j) @ (inp if j == 3 else ELU(inp)) + p[f"layer{j}"]["bias"])
        svs.extend(np.concatenate([np.linalg.svd(J, compute_uv=False) for J in jac]))
    np.testing.assert_allclose(got["ldi_mean"], np.mean(svs), rtol=1e-10)
    np.testing.assert_allclose(got["ldi_std"], np.std(svs, ddof=1), rtol=1e-10)


def test_ldi_is_jittable_and_batched():
    rng = np.random.default_rng(2)
    jacs = [jnp.asarray(rng.normal(size=(7, 3, 4)), jnp.float32)]
    mean, std = jax.jit(ldi.ldi_arrays)(jacs)
    sv = np.linalg.svd(np.asarray(jacs[0], np.float64), compute_uv=False)
    assert float(mean) == pytest.approx(sv.mean(), rel=1e-5)
    assert float(std) == pytest.approx(sv.std(ddof=1), rel=1e-4)
