"""GNE moments (exact vs Hutchinson, closed forms), exact Jacobians, block discovery."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.analysis import blocks, jacobian, moments
from gnj.models import build


def _orthogonal(rng, n):
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    return q * np.sign(np.diag(r))


def test_orthogonal_linear_network_is_exactly_isometric():
    rng = np.random.default_rng(0)
    ws = [jnp.asarray(_orthogonal(rng, 16), jnp.float32) for _ in range(6)]

    def f(x):
        for w in ws:
            x = w @ x
        return x

    xs = jnp.asarray(rng.normal(size=(3, 16)), jnp.float32)
    exact = moments.exact_moments(jacobian.per_sample_jacobians(f, xs))
    assert exact["phi"] == pytest.approx(1.0, abs=1e-6)
    assert abs(exact["spread"]) < 1e-6
    # Every probe gives ‖Jᵀv‖²/m = ‖v‖²/m = 1 exactly, so the estimate has no noise either.
    est = moments.hutchinson_moments(f, xs, num_probes=4)
    assert est["phi"] == pytest.approx(1.0, abs=1e-6) and abs(est["spread"]) < 1e-6
    assert est["phi_se"] < 1e-6


def _jacrev_jacobians(f, params, xs):
    """(N, m, n) float64 Jacobians of ``f(params, x)`` by plain ``jax.jacrev`` (not gnj's)."""
    one = jax.jit(jax.jacrev(f, argnums=1))
    out_dim = int(np.prod(jax.eval_shape(f, params, xs[0]).shape))
    return np.stack([np.asarray(one(params, x), np.float64).reshape(out_dim, -1) for x in xs])


def _numpy_moments(jacs):
    """φ(JJᵀ), φ((JJᵀ)²) and the spread by their definitions (Chen et al.), in NumPy."""
    m = jacs.shape[1]
    jjt = jacs @ jacs.transpose(0, 2, 1)
    phi = np.mean(np.trace(jjt, axis1=1, axis2=2) / m)
    phi2 = np.mean(np.einsum("nij,nji->n", jjt, jjt) / m)
    return {"phi": phi, "phi2": phi2, "spread": phi2 - phi**2}


def test_deep_relu_mlp_with_he_init_has_phi_near_one():
    # The registered MLP with its He (kaiming_normal, gain √2) init: 8 ReLU layers of width
    # 512 and a linear read-out (gain 1) of width 512. E φ(JJᵀ) = 1 over inits (each layer
    # keeps E‖Jᵀv‖²: gain 2 × half the units active); one init fluctuates by a few percent, so
    # average over independent inits (weights and inputs).
    width, depth, inits = 512, 8, 6
    model = build({"name": "mlp", "hidden": (width,) * depth, "act": "relu",
                   "weight_init": "kaiming_normal"}, width)
    f = moments.ModelMap(model)
    phis = []
    for seed in range(inits):
        xs = jax.random.normal(jax.random.PRNGKey(100 + seed), (2, width))
        v = model.init(jax.random.PRNGKey(seed), xs)
        exact = _numpy_moments(_jacrev_jacobians(f, v, xs))
        got = moments.network_moments(model, v, xs)  # 2 × 1 MiB Jacobians: the exact path
        assert got["method"] == "exact"
        assert got["phi"] == pytest.approx(exact["phi"], rel=1e-4)
        phis.append(exact["phi"])
    assert np.mean(phis) == pytest.approx(1.0, rel=0.1)
    assert all(0.7 < p < 1.3 for p in phis)


def _check_against_exact(f, params, xs, num_probes=64, seed=5):
    exact = _numpy_moments(_jacrev_jacobians(f, params, xs))
    est = moments.hutchinson_moments_fn(f, params, xs, num_probes, seed)
    assert est["method"] == "hutchinson" and est["phi_se"] > 0
    assert abs(est["phi"] - exact["phi"]) < 3 * est["phi_se"]
    assert abs(est["phi2"] - exact["phi2"]) < 3 * est["phi2_se"]
    assert abs(est["spread"] - exact["spread"]) < 3 * est["spread_se"]
    # gnj's exact path agrees with the NumPy definitions.
    ours = moments.exact_moments(jacobian.per_sample_jacobians(lambda z: f(params, z), xs))
    for key in ("phi", "phi2"):
        assert ours[key] == pytest.approx(exact[key], rel=1e-4)
    return exact, est


def test_hutchinson_agrees_with_exact_on_a_small_mlp():
    model = build({"name": "mlp", "hidden": (12, 12), "act": "tanh"}, 10)
    xs = jax.random.normal(jax.random.PRNGKey(0), (6, 8))
    v = model.init(jax.random.PRNGKey(1), xs)
    _check_against_exact(moments.ModelMap(model), v, xs)


def _resnet8():
    model = build({"name": "resnet_cifar", "depth": 8, "width": 4, "norm": "batch"}, 10)
    images = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3))
    return model, model.init(jax.random.PRNGKey(1), images), images


def test_hutchinson_agrees_with_exact_on_a_convnet_block():
    model, v, images = _resnet8()
    b = blocks.find_blocks(model, v, images)["stage3_block0"]
    _check_against_exact(moments.BlockMap.of(b), b.variables, b.input, num_probes=32)


@pytest.mark.slow
def test_hutchinson_agrees_with_exact_on_a_whole_convnet():
    model, v, images = _resnet8()
    _check_against_exact(moments.ModelMap(model), v, images, num_probes=32)


def test_moments_are_exact_where_they_fit_and_matrix_free_otherwise():
    model = build({"name": "mlp", "hidden": (6, 6), "act": "tanh"}, 4)
    xs = jax.random.normal(jax.random.PRNGKey(2), (5, 5))
    v = model.init(jax.random.PRNGKey(3), xs)
    exact = moments.block_moments(model, v, xs, num_probes=48)
    est = moments.block_moments(model, v, xs, num_probes=48, exact_max_bytes=0)
    assert list(exact) == ["layer0", "layer1"]
    for name in exact:
        assert exact[name]["method"] == "exact" and est[name]["method"] == "hutchinson"
        assert abs(est[name]["phi"] - exact[name]["phi"]) < 3 * est[name]["phi_se"]
        assert abs(est[name]["spread"] - exact[name]["spread"]) < 3 * est[name]["spread_se"]
    # The first block's exact φ by hand: J = diag(tanh′(Wx+b))·Wᵀ (flax kernel is (in, out)).
    p = jax.tree.map(np.asarray, v["params"]["layer0"]["dense"])
    z = np.asarray(xs, np.float64) @ p["kernel"] + p["bias"]
    jacs = (1 - np.tanh(z) ** 2)[:, :, None] * p["kernel"].T[None]
    jjt = jacs @ jacs.transpose(0, 2, 1)
    phi_i = np.trace(jjt, axis1=1, axis2=2) / 6
    phi2_i = np.einsum("nij,nji->n", jjt, jjt) / 6
    assert exact["layer0"]["phi"] == pytest.approx(phi_i.mean(), rel=1e-5)
    assert exact["layer0"]["spread"] == pytest.approx(phi2_i.mean() - phi_i.mean() ** 2,
                                                      rel=1e-4, abs=1e-7)


def test_spread_estimator_is_unbiased_for_a_fixed_matrix():
    # J fixed (linear map): the spread is φ(A²) − φ(A)² with A = JJᵀ; averaging many
    # independent single-sample estimates (p = 2) must converge to it, the plug-in would not.
    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.normal(size=(5, 7)) / math.sqrt(7), jnp.float32)
    a = np.asarray(w, np.float64) @ np.asarray(w, np.float64).T
    target = np.trace(a @ a) / 5 - (np.trace(a) / 5) ** 2
    xs = jnp.zeros((400, 7))
    ests = [moments.hutchinson_moments(lambda x: w @ x, xs[i:i + 1], num_probes=2,
                                   key=i)["spread"] for i in range(40)]
    big = moments.hutchinson_moments(lambda x: w @ x, xs, num_probes=2, key=99)
    assert abs(big["spread"] - target) < 3 * big["spread_se"]
    assert abs(np.mean(ests) - target) < 3 * np.std(ests) / math.sqrt(len(ests))


def test_bad_requests():
    with pytest.raises(ValueError, match="num_probes must be > 0"):
        moments.hutchinson_moments(lambda x: x, jnp.ones((2, 3)), num_probes=0)
    with pytest.raises(ValueError, match="num_probes must be > 0"):
        moments.block_moments(None, None, None, num_probes=-1)
    with pytest.raises(ValueError, match="over max_bytes.*hutchinson_moments.*spectrum.slq"):
        jacobian.per_sample_jacobians(lambda x: jnp.tile(x, 1000), jnp.ones((4, 1000)),
                                      max_bytes=1024)


# ----------------------------------------------------------------------- exact Jacobians


def test_jacobians_forward_and_reverse_mode_match_closed_form():
    rng = np.random.default_rng(4)
    for m, n in ((3, 7), (7, 3)):  # jacrev (in ≥ out) and jacfwd (in < out)
        w = rng.normal(size=(m, n))
        xs = rng.normal(size=(5, n))
        with jax.enable_x64(True):
            jac = jacobian.per_sample_jacobians(lambda x, w=w: jnp.tanh(jnp.asarray(w) @ x),
                                                jnp.asarray(xs), batch_size=2)
            sv = jacobian.singular_values(jac)
        expected = (1 - np.tanh(xs @ w.T) ** 2)[:, :, None] * w[None]
        np.testing.assert_allclose(jac, expected, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(sv, np.linalg.svd(expected, compute_uv=False), rtol=1e-10)


def test_model_jacobians_match_jacrev_of_the_model():
    model = build({"name": "mlp", "hidden": (5,), "act": "tanh"}, 3)
    xs = jax.random.normal(jax.random.PRNGKey(0), (4, 2, 2, 1))
    v = model.init(jax.random.PRNGKey(1), xs)
    jac = jacobian.model_jacobians(model, v, xs, batch_size=3)
    for i in range(4):
        direct = jax.jacrev(lambda x: model.apply(v, x[None])[0])(xs[i]).reshape(3, 4)
        np.testing.assert_allclose(jac[i], direct, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="MLP need"):
        jacobian.model_jacobians(model, v, xs, max_bytes=100)


# --------------------------------------------------------------------------------- blocks


class _Residual(nn.Module):
    is_block = True

    @nn.compact
    def __call__(self, x, train=False):
        return x + jnp.tanh(nn.Dense(x.shape[-1], name="fc")(x))


class _Toy(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(4, name="stem")(x)
        x = _Residual(name="b0")(x, train)
        x = _Residual(name="b1")(x, train)
        return nn.Dense(2, name="head")(x)


def test_blocks_of_a_hand_built_model_match_the_block_applied_directly():
    model = _Toy()
    xs = jax.random.normal(jax.random.PRNGKey(0), (3, 5))
    v = model.init(jax.random.PRNGKey(1), xs)
    found = blocks.find_blocks(model, v, xs)
    assert list(found) == ["b0", "b1"]
    p = v["params"]
    h0 = xs @ p["stem"]["kernel"] + p["stem"]["bias"]
    np.testing.assert_allclose(found["b0"].input, h0, rtol=1e-6)
    direct = lambda z: _Residual().apply({"params": p["b1"]}, z)
    jac = jacobian.block_jacobians(model, v, xs, "b1")
    for i in range(3):
        z = found["b1"].input[i]
        np.testing.assert_allclose(jac[i], jax.jacrev(direct)(z), rtol=1e-5, atol=1e-6)
        # ... and by hand: I + diag(tanh′(W z + b))·Wᵀ.
        w = np.asarray(p["b1"]["fc"]["kernel"])
        d = 1 - np.tanh(np.asarray(z) @ w + np.asarray(p["b1"]["fc"]["bias"])) ** 2
        np.testing.assert_allclose(jac[i], np.eye(4) + d[:, None] * w.T, rtol=1e-5, atol=1e-6)


def test_block_discovery_on_resnet8_finds_every_block_with_its_real_input():
    model = build({"name": "resnet_cifar", "depth": 8, "width": 4}, 10)
    images = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    v = model.init(jax.random.PRNGKey(1), images)
    inputs = blocks.block_inputs(model, v, images)
    names = list(inputs)
    assert names == ["stage1_block0", "stage2_block0", "stage3_block0"]  # 3n, n = 1
    assert [inputs[n].shape for n in names] == [(2, 8, 8, 4), (2, 8, 8, 4), (2, 4, 4, 8)]
    # Each block applied to its recorded input gives the next block's recorded input.
    for a, b in zip(names, names[1:]):
        out = blocks.block_function(model, v, images, a)(inputs[a])
        np.testing.assert_allclose(out, inputs[b], rtol=1e-5, atol=1e-6)
    # Block Jacobians (from the unbound copy) equal jax.jacrev of the block run in the model.
    name = "stage3_block0"
    jac = jacobian.block_jacobians(model, v, images, name)
    in_model = blocks.per_sample(blocks.block_function(model, v, images[:1], name))
    direct = jax.jacrev(in_model)(inputs[name][1]).reshape(jac.shape[1:])
    np.testing.assert_allclose(jac[1], direct, rtol=1e-4, atol=1e-6)


def test_unknown_block_is_a_value_error_listing_the_valid_ones():
    model = build({"name": "resnet_cifar", "depth": 8, "width": 4}, 10)
    images = jnp.zeros((1, 8, 8, 3))
    v = model.init(jax.random.PRNGKey(1), images)
    msg = "unknown block 'stage9' of ResNetCifar; valid blocks: stage1_block0, stage2_block0"
    with pytest.raises(ValueError, match=msg):
        jacobian.block_jacobians(model, v, images, "stage9")
    with pytest.raises(ValueError, match=msg):
        blocks.block_function(model, v, images, "stage9")(jnp.zeros((1, 8, 8, 4)))
    with pytest.raises(ValueError, match=msg):
        moments.block_moments(model, v, images, names=["stage9"])
