"""ConstNet channel symmetry (and its breaking), LeakyNet identity pairs and odd-block norms."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.models import build
from tests.models.test_zoo_part1 import (
    _intermediates,
    apply,
    init,
)


def _max_channel_spread(intermediates) -> float:
    worst = 0.0
    for path, value in jax.tree_util.tree_leaves_with_path(intermediates):
        if value.ndim == 4 and "block" in jax.tree_util.keystr(path):
            worst = max(worst, float(jnp.max(jnp.max(value, -1) - jnp.min(value, -1))))
    return worst


@pytest.mark.parametrize("kw", [{}, {"norm": "none"}, {"double_forward": True}])
def test_constnet_every_channel_identical_at_init(kw):
    model = build({"name": "wrn_constnet", "depth": 10, "widen_factor": 1, **kw}, 10)
    v = init(model, jnp.zeros((1, 8, 8, 3)), 0)
    for seed in range(2):  # any input
        x = jax.random.normal(jax.random.PRNGKey(seed + 5), (3, 8, 8, 3)) * (seed + 1)
        inter = _intermediates(model, v, x, train=False)
        assert _max_channel_spread(inter) == 0.0
        nonzero = [float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(inter) if a.ndim == 4]
        assert max(nonzero) > 0  # identical, not trivially zero
        np.testing.assert_array_equal(apply(model, v, x), 0.0)
    p = v["params"]
    np.testing.assert_allclose(p["stem"]["kernel"][1, 1], 1 / 3)  # const_avg centre tap
    np.testing.assert_array_equal(p["stem"]["kernel"][0], 0.0)
    np.testing.assert_allclose(p["stage2_block0"]["conv_res"]["kernel"], 1 / 16)
    np.testing.assert_array_equal(p["stage2_block0"]["conv"]["kernel"], 0.0)


def test_constnet_noise_breaks_channel_symmetry_in_training_forward():
    model = build({"name": "wrn_constnet", "depth": 7, "widen_factor": 1,
                   "noise_scale": 1e-3}, 10)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 3))
    v = init(model, x, 1)
    inter = _intermediates(model, v, x, train=True, rngs={"noise": jax.random.key(2, impl="rbg")})
    assert _max_channel_spread(inter) > 1e-5
    assert _max_channel_spread(_intermediates(model, v, x, train=False)) == 0.0


def test_constnet_double_forward_draws_dropout_twice():
    # the quirk evaluates each stage twice and keeps the second pass: with dropout the result
    # differs from the single pass under the same rng
    kw = {"name": "wrn_constnet", "depth": 7, "widen_factor": 1, "varnet": True,
          "droprate": 0.5, "norm": "none"}
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    once = build(kw, 10)
    v = init(once, x, 1)
    twice = build({**kw, "double_forward": True}, 10)
    rng = {"dropout": jax.random.key(3, impl="rbg")}
    a = _intermediates(once, v, x, train=True, rngs=rng)["stage1_block0"]["__call__"]
    b = _intermediates(twice, v, x, train=True, rngs=rng)["stage1_block0"]["__call__"]
    assert len(a) == 1 and len(b) == 2
    np.testing.assert_array_equal(b[0], a[0])
    assert not np.allclose(b[1], b[0])
    # eval mode: both passes are the same function of the same input
    np.testing.assert_allclose(apply(once, v, x), apply(twice, v, x), rtol=1e-6)


def test_leakynet_identity_pair_composes_to_minus_x():
    alpha = 0.1
    model = build({"name": "leakynet", "depth": 10, "widen_factor": 1, "lrelu": alpha,
                   "norm": "none", "init_string": "1_ii_ii_ii"}, 10)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    v = init(model, x, 1)
    inter = _intermediates(model, v, x)
    stem = np.asarray(inter["stem"]["__call__"][0])
    # block0 (phase +1, I), block1 (phase −1, −I/α): leaky(−leaky(z)/α) = −z for all z
    np.testing.assert_allclose(inter["block1"]["__call__"][0], -stem, rtol=1e-5, atol=1e-6)
    # stem '1': every channel the mean of the 3 input channels (centre tap 1/3)
    np.testing.assert_allclose(stem[..., 0], stem[..., 5])


def test_leakynet_bn_only_on_odd_blocks():
    model = build({"name": "leakynet", "depth": 10, "widen_factor": 1,
                   "init_string": "h_hh_hh_hh"}, 10)
    p = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3))))
    with_norm = sorted(k for k, b in p["params"].items() if "norm" in b)
    assert with_norm == ["block1", "block3", "block5"]
