"""Analysis: exact vs matrix-free GNE moments, closed forms, LDI vs NumPy, block discovery."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.analysis import blocks, gne, jacobian, ldi
from gnj.models import build, dense_mlp


def _orthogonal(rng, n):
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    return q * np.sign(np.diag(r))


def test_orthogonal_linear_network_is_exactly_isometric():
    rng = np.random.default_rng(0)
    ws = [jnp.asarray(_orthogonal(rng, 16)) for _ in range(6)]

    def f(x):
        for w in ws:
            x = w @ x
        return x

    xs = jnp.asarray(rng.normal(size=(3, 16)), jnp.float32)
    exact = gne.exact_moments(jacobian.per_sample_jacobians(f, xs))
    assert exact["phi"] == pytest.approx(1.0, abs=1e-6)
    assert abs(exact["spread"]) < 1e-6
    est = gne.hutchinson_moments(f, xs, num_probes=4)
    assert est["phi"] == pytest.approx(1.0, abs=1e-5) and abs(est["spread"]) < 1e-5


def test_deep_relu_mlp_with_he_init_has_phi_near_one():
    rng = np.random.default_rng(1)
    width, depth = 512, 6
    # He gain √2 on the layers followed by a ReLU, gain 1 on the linear read-out.
    gains = [2.0] * (depth - 1) + [1.0]
    ws = [jnp.asarray(rng.normal(size=(width, width)) * math.sqrt(g / width), jnp.float32)
          for g in gains]

    def f(x):
        for w in ws[:-1]:
            x = jax.nn.relu(w @ x)
        return ws[-1] @ x

    xs = jnp.asarray(rng.normal(size=(4, width)), jnp.float32)
    exact = gne.exact_moments(jacobian.per_sample_jacobians(f, xs, batch_size=2))
    assert exact["phi"] == pytest.approx(1.0, rel=0.1)


def _check_against_exact(f, xs, num_probes=64):
    exact = gne.exact_moments(jacobian.per_sample_jacobians(f, xs))
    est = gne.hutchinson_moments(f, xs, num_probes=num_probes, key=jax.random.PRNGKey(5))
    assert abs(est["phi"] - exact["phi"]) < 3 * est["phi_se"] + 1e-6
    assert abs(est["spread"] - exact["spread"]) < 3 * est["spread_se"] + 1e-6
    return exact, est


def test_hutchinson_agrees_with_exact_on_a_small_mlp():
    model = build({"name": "mlp", "hidden": (12, 12), "act": "tanh"}, 10)
    xs = jax.random.normal(jax.random.PRNGKey(0), (6, 8))
    v = model.init(jax.random.PRNGKey(1), xs)
    _check_against_exact(lambda x: model.apply(v, x[None])[0], xs)


def test_hutchinson_agrees_with_exact_on_a_convnet_block():
    model = build({"name": "resnet_cifar", "depth": 8, "width": 4, "norm": "batch"}, 10)
    images = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3))
    v = model.init(jax.random.PRNGKey(1), images)
    inputs = blocks.block_inputs(model, v, images)
    name = "stage2_block0"
    f = blocks.block_function(model, v, images[:1], name)
    _check_against_exact(lambda z: f(z[None])[0], inputs[name])


def test_block_discovery_finds_every_block_with_its_real_input():
    model = build({"name": "resnet_cifar", "depth": 14, "width": 4}, 10)
    images = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    v = model.init(jax.random.PRNGKey(1), images)
    inputs = blocks.block_inputs(model, v, images)
    names = list(inputs)
    assert names == [f"stage{s}_block{i}" for s in (1, 2, 3) for i in (0, 1)]
    assert inputs["stage2_block0"].shape == (2, 8, 8, 4)
    assert inputs["stage3_block1"].shape == (2, 2, 2, 16)
    # Each block applied to its recorded input gives the next block's recorded input.
    for a, b in zip(names, names[1:]):
        out = blocks.block_function(model, v, images, a)(inputs[a])
        np.testing.assert_allclose(out, inputs[b], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown block 'stage9'.*stage1_block0"):
        blocks.check_block(names, "stage9")


def test_bad_requests():
    with pytest.raises(ValueError, match="num_probes must be > 0"):
        gne.hutchinson_moments(lambda x: x, jnp.ones((2, 3)), num_probes=0)
    with pytest.raises(ValueError, match="hutchinson_moments"):
        jacobian.per_sample_jacobians(lambda x: jnp.tile(x, 1000), jnp.ones((4, 1000)),
                                      max_bytes=1024)


def test_ldi_of_one_linear_layer_is_its_mean_singular_value():
    w = np.random.default_rng(0).normal(size=(5, 7))
    got = ldi.ldi([jnp.asarray(w)[None].repeat(3, 0)])
    np.testing.assert_allclose(got["ldi_mean"], np.linalg.svd(w, compute_uv=False).mean(),
                               rtol=1e-5)


@pytest.mark.parametrize("quirk", ["correct", "reference"])
def test_ldi_of_dense_mlp_matches_numpy(quirk):
    model = build({"name": "dense_mlp", "width": 4, "depth": 4, "tc": 3, "topology_seed": 1}, 3)
    x = np.random.default_rng(0).normal(size=(5, 6))
    with jax.enable_x64(True):
        v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 6)))
        got = ldi.ldi(ldi.dense_mlp_jacobians(model, v, jnp.asarray(x), quirk))
    p = jax.tree.map(np.asarray, v["params"])
    if quirk == "correct":
        d = lambda z: np.where(z > 0, 1.0, np.exp(z))
    else:
        d = lambda z: np.where(z > 0, np.exp(z), 0.0)
    elu = lambda z: np.where(z > 0, z, np.exp(z) - 1)
    W = lambda j: p[f"layer{j}"]["kernel"].T
    links = dense_mlp.sample_links(4, 4, 3, 1)
    svs = []
    for xi in x:
        z0 = W(0) @ xi + p["layer0"]["bias"]
        o = [elu(z0), None]
        o[1] = W(1) @ o[0] + p["layer1"]["bias"]
        jac = [np.diag(d(z0)) @ W(0), W(1)]
        for j in (2, 3):
            pool = np.concatenate(o[j - 2::-1])
            inp = np.concatenate([o[j - 1], pool[links[j - 2]]])
            jac.append(W(j) @ np.diag(d(inp)))
            o.append(W(j) @ (inp if j == 3 else elu(inp)) + p[f"layer{j}"]["bias"])
        svs.extend(np.concatenate([np.linalg.svd(J, compute_uv=False) for J in jac]))
    np.testing.assert_allclose(got["ldi_mean"], np.mean(svs), rtol=1e-6)
    np.testing.assert_allclose(got["ldi_std"], np.std(svs), rtol=1e-6)


def test_analyze_cli_writes_json_and_plot(tfds_dir, tmp_path):
    from configs import default
    from gnj.analysis import run

    c = default.get_config("runlocal")
    c.dataset.data_dir = tfds_dir
    c.analysis.num_samples = 2
    c.analysis.num_probes = 2
    result = run.run(c, str(tmp_path))
    assert result["source"] == "init" and len(result["blocks"]) == 3
    assert (tmp_path / "analysis" / "analysis.json").exists()
    assert (tmp_path / "analysis" / "phi_by_block.png").stat().st_size > 1000
