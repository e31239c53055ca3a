"""ConstNet symmetry (Blumenfeld et al.): identical channels at init and through training, broken
by the explicit noise op or dropout; LeakyNet init strings; the noise op itself."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gnj import train
from gnj.models import build
from gnj.nn import inits
from gnj.nn.noise import SymmetryNoise, add_noise


def _channel_spread(model, variables, x):
    """max over layers of (max − min over channels) / (mean |activation| + tiny)."""
    _, state = model.apply(variables, x, train=False, capture_intermediates=True,
                           mutable=["intermediates"])
    worst = 0.0
    for path, value in jax.tree_util.tree_leaves_with_path(state["intermediates"]):
        if value.ndim == 4 and "block" in jax.tree_util.keystr(path):
            spread = jnp.max(value, -1) - jnp.min(value, -1)
            worst = max(worst, float(jnp.max(spread) / (jnp.mean(jnp.abs(value)) + 1e-12)))
    return worst


def _train(model, steps, seed=0):
    tx = optax.sgd(0.1, momentum=0.9)
    state = train.init_state(model, tx, (8, 8, 3), 0)
    step = jax.jit(train.make_train_step(model, tx, lambda x, k: x, optax.constant_schedule(0.1)))
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        batch = {"image": jnp.asarray(rng.normal(size=(16, 8, 8, 3)), jnp.float32),
                 "label": jnp.asarray(rng.integers(0, 10, 16), jnp.int32)}
        state, _ = step(state, batch)
    return state


X = jax.random.normal(jax.random.PRNGKey(3), (4, 8, 8, 3))


def test_constnet_channels_identical_at_init_and_after_20_steps_without_noise():
    model = build({"name": "wrn_constnet", "depth": 7, "widen_factor": 1}, 10)
    v = model.init(jax.random.PRNGKey(0), X)
    assert _channel_spread(model, v, X) == 0.0
    np.testing.assert_array_equal(model.apply(v, X), 0.0)  # zero classifier
    state = _train(model, 20)
    assert _channel_spread(model, state.variables(), X) < 1e-5


@pytest.mark.parametrize("breaker", [{"noise_scale": 1e-3}, {"droprate": 0.1}])
def test_noise_or_dropout_breaks_the_symmetry(breaker):
    model = build({"name": "wrn_constnet", "depth": 7, "widen_factor": 1, **breaker}, 10)
    state = _train(model, 2)
    assert _channel_spread(model, state.variables(), X) > 1e-3


def test_varnet_is_not_symmetric():
    model = build({"name": "wrn_constnet", "depth": 7, "widen_factor": 1, "varnet": True}, 10)
    assert _channel_spread(model, model.init(jax.random.PRNGKey(0), X), X) > 0.1


def test_wrn_16_10_parameter_count():
    model = build({"name": "wrn_constnet", "depth": 16, "widen_factor": 10}, 10)
    v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    got = sum(x.size for x in jax.tree.leaves(v["params"]))
    expected, cin = 3 * 16 * 9, 16
    for width in (160, 320, 640):
        for i in range(4):
            expected += cin * width * 9 + 2 * cin  # BN on the block input, then the 3×3 conv
            if i == 0:
                expected += cin * width  # 1×1 projection
            cin = width
    assert got == expected + 640 * 10 + 10


def test_leakynet_init_strings():
    w = inits.init_string_init("i", 1, lrelu=0.5)(jax.random.PRNGKey(0), (3, 3, 2, 4))
    expected = np.zeros((3, 3, 2, 4))
    for d in range(4):
        expected[1, 1, d % 2, d] = -1 / 0.5  # odd block: phase −1, divided by the slope
    np.testing.assert_allclose(w, expected)
    w = inits.init_string_init("1", 2, lrelu=0.5)(jax.random.PRNGKey(0), (3, 3, 4, 2))
    expected = np.zeros((3, 3, 4, 2))
    expected[1, 1] = 1 / 4
    np.testing.assert_allclose(w, expected)
    h = inits.init_string_init("h", 0, lrelu=0.0)(jax.random.PRNGKey(0), (3, 3, 64, 64))
    assert float(jnp.var(h)) == pytest.approx(np.sqrt(2) / (9 * 64), rel=0.05)
    with pytest.raises(ValueError, match="needs out ≥ in channels"):
        inits.init_string_init("i", 3)(jax.random.PRNGKey(0), (3, 3, 8, 4))
    with pytest.raises(ValueError, match="has 5 layer chars, the net has 4 convs"):
        build({"name": "leakynet", "depth": 7, "widen_factor": 1, "init_string": "1_ii_i_i"},
              10).init(jax.random.PRNGKey(0), X)


def test_leakynet_trains():
    model = build({"name": "leakynet", "depth": 7, "widen_factor": 1, "init_string": "h_h_h_h",
                   "fc_noise": 1.0}, 10)
    state = _train(model, 3)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_noise_op_forward_and_backward():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x = jnp.zeros((20000,))
    y = add_noise(x, k1, k2, 0.1)
    g = jax.grad(lambda x: jnp.sum(add_noise(x, k1, k2, 0.1)))(x)
    assert float(jnp.std(y)) == pytest.approx(0.1, rel=0.03)
    assert float(jnp.std(g)) == pytest.approx(0.1, rel=0.03)
    assert float(jnp.mean(g)) == pytest.approx(1.0, abs=0.005)
    assert abs(float(jnp.corrcoef(y, g - 1)[0, 1])) < 0.05  # independent draws
    layer = SymmetryNoise(0.1)
    np.testing.assert_array_equal(layer.apply({}, x, False), x)  # eval: identity
    a = layer.apply({}, x, True, rngs={"noise": jax.random.PRNGKey(1)})
    b = layer.apply({}, x, True, rngs={"noise": jax.random.PRNGKey(2)})
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(SymmetryNoise(0.0).apply({}, x, True), x)


def test_constnet_depth_rule():
    with pytest.raises(ValueError, match="wrn_constnet: depth 9 is not 3n\\+4"):
        build({"name": "wrn_constnet", "depth": 9}, 10).init(jax.random.PRNGKey(0), X)


def test_constnet_projection_reads_the_relu_output_like_the_in_place_reference():
    """Stride-2 block with ConstNet init: the 3×3 conv is 0, so the block's output is the 1×1
    const_avg projection alone, i.e. the channel mean of ReLU(BN(x)) (the reference's in-place
    ReLU overwrites BN(x) before its projection reads it); the option gives the mean of BN(x)."""
    from gnj.models.layers import Layers
    from gnj.nn import inits
    from gnj.proj.constnet.models import ConstBlock

    x = jax.random.normal(jax.random.PRNGKey(5), (6, 4, 4, 3)) * 2.0 + 0.3
    xn = np.asarray(x, np.float64)
    bn = (xn - xn.mean((0, 1, 2))) / np.sqrt(xn.var((0, 1, 2)) + 1e-5)
    for after_relu, pre in ((True, np.maximum(bn, 0.0)), (False, bn)):
        layers = Layers.from_specs("batch", "plain", "relu", inits.zeros())
        block = ConstBlock(5, 2, layers, inits.const_avg(), 0.0, 0.0,
                           projection_after_relu=after_relu)
        v = block.init(jax.random.PRNGKey(0), x)
        y, _ = block.apply(v, x, True, mutable=["batch_stats"])
        expected = np.repeat(pre[:, ::2, ::2].mean(-1, keepdims=True), 5, -1)
        np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)
    assert build({"name": "wrn_constnet"}, 10).projection_after_relu  # the reference's default
