"""Architecture zoo, part 1 (Chen et al., Lubana et al., Blumenfeld et al.): parameter counts at
full size against closed forms written here (and published counts where there are some), the
structural facts the references state (DenseNet's as-written transitions, serial nets' init rule,
Lubana's bias rule and SkipInit identity, CIFAR Fixup gain, zero Fixup logits, ConstNet symmetry,
LeakyNet's (+I, −I/α) pairs), and bad-input errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.models import build
from gnj.proj.gne.models import fixup_factor
from gnj.nn import inits
from gnj.registry import NORMS

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def fast(f, *args):
    """``jax.jit(f)(*args)`` compiled with cheap XLA:CPU settings (the tests are tiny nets whose
    cost is all compile time); results are the same maths, not bit-identical to eager."""
    return jax.jit(f).lower(*args).compile(compiler_options=FAST_COMPILE)(*args)


def init(model, x, seed=1):
    return fast(lambda x: model.init(jax.random.key(seed, impl="rbg"), x), x)


def apply(model, variables, x, **kw):
    return fast(lambda v, x: model.apply(v, x, **kw), variables, x)


# ------------------------------------------------------------------------------------------------
# Closed-form parameter counts (BN: γ and β per channel; running stats are not parameters)


def n_params(model, shape):
    v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape))))
    return sum(x.size for x in jax.tree.leaves(v["params"]))


def conv(cin, cout, k, bias=False):
    return cin * cout * k * k + (cout if bias else 0)


def bn(c):
    return 2 * c


def linear(cin, cout):
    return cin * cout + cout


def resnet_cifar_count(n, widths=(16, 32, 64), k_short=0, classes=10):
    """Stem conv+BN, 3 stages of n two-conv blocks, optional k×k projections, linear."""
    total, cin = conv(3, widths[0], 3) + bn(widths[0]), widths[0]
    for w in widths:
        for _ in range(n):
            total += conv(cin, w, 3) + bn(w) + conv(w, w, 3) + bn(w)
            if cin != w and k_short:
                total += conv(cin, w, k_short) + bn(w)
            cin = w
    return total + linear(widths[-1], classes)


def constnet_count(depth, k, classes=10):
    """Single-conv WRN: BN on the block input, one 3×3 conv, 1×1 projection on shape change."""
    n = (depth - 4) // 3
    total, cin = conv(3, 16, 3), 16
    for w in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += bn(cin) + conv(cin, w, 3) + (conv(cin, w, 1) if cin != w else 0)
            cin = w
    return total + linear(64 * k, classes)


def densenet_count(growth=12, blocks=(8, 8, 8), reduction=0.5, classes=10):
    c = 2 * growth
    total = conv(3, c, 3)
    for s, nb in enumerate(blocks):
        for _ in range(nb):
            total += bn(c) + conv(c, 4 * growth, 1) + bn(4 * growth) + conv(4 * growth, growth, 3)
            c += growth
        if s < len(blocks) - 1:
            out = int(math.floor(c * reduction))
            total += bn(c) + conv(c, out, 1)
            c = out
    return total + bn(c) + linear(c, classes), c


MOBILENET = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [
    (1024, 2), (1024, 1)]


def mobilenet_count(dense=False, classes=1000):
    total, cin = conv(3, 32, 3) + bn(32), 32
    for c, _ in MOBILENET:
        if dense:
            total += conv(cin, c, 3) + bn(c)
        else:
            total += 9 * cin + bn(cin) + conv(cin, c, 1) + bn(c)  # depthwise + pointwise
        cin = c
    return total + linear(1024, classes)


def vgg_count(widths, classes=100):
    return sum(conv(a, b, 3) + bn(b) for a, b in zip([3, *widths[:-1]], widths)) + linear(
        widths[-1], classes)


def fixup_resnet50_count(classes=1000):
    """Bottlenecks (3, 4, 6, 3) without norms; 7 scalars per block, bias1 and bias2 overall."""
    total, inplanes = conv(3, 64, 7) + 2, 64
    for stage, blocks in enumerate((3, 4, 6, 3)):
        p = 64 * 2**stage
        for i in range(blocks):
            total += conv(inplanes, p, 1) + conv(p, p, 3) + conv(p, 4 * p, 1) + 7
            if i == 0:
                total += conv(inplanes, 4 * p, 1)
            inplanes = 4 * p
    return total + linear(2048, classes)


def test_closed_forms_reproduce_published_counts():
    # He et al. 2016 Table 6 (0.27M, 0.85M, 1.7M); exact values as counted by the common PyTorch
    # port (akamaster/pytorch_resnet_cifar10): 269,722 / 853,018 / 1,727,962.
    assert resnet_cifar_count(3) == 269_722
    assert resnet_cifar_count(9) == 853_018
    assert resnet_cifar_count(18) == 1_727_962
    # MobileNet v1 1.0-224 (Howard et al. 2017: 4.2M); Keras' trainable count is 4,231,976.
    assert mobilenet_count() == 4_231_976
    # DenseNet-BC channel plan of the reference: 24 → 120 → 60 → 156 → 78 → 174.
    assert densenet_count()[1] == 174


@pytest.mark.parametrize("spec,shape,expected", [
    ({"name": "resnet_cifar", "depth": 20}, (32, 32, 3), resnet_cifar_count(3)),
    ({"name": "resnet_cifar", "depth": 56}, (32, 32, 3), resnet_cifar_count(9)),
    ({"name": "resnet_cifar", "depth": 110}, (32, 32, 3), resnet_cifar_count(18)),
    ({"name": "resnet56_lubana", "num_classes": 100}, (32, 32, 3),
     resnet_cifar_count(9, (32, 64, 128), k_short=3, classes=100)),
    ({"name": "wrn_constnet", "depth": 16, "widen_factor": 10}, (32, 32, 3),
     constnet_count(16, 10)),
    ({"name": "mobilenet_v1", "num_classes": 1000}, (224, 224, 3), mobilenet_count()),
    ({"name": "mobilenet_v1", "num_classes": 1000, "dense": True}, (224, 224, 3),
     mobilenet_count(dense=True)),
    ({"name": "densenet_cifar"}, (32, 32, 3), densenet_count()[0]),
    ({"name": "vgg", "cfg": "cfg_10", "num_classes": 100}, (32, 32, 3),
     vgg_count([64, 64, 128, 128, 256, 256, 512, 512, 512, 512])),
    ({"name": "fixup_resnet50", "num_classes": 1000}, (224, 224, 3), fixup_resnet50_count()),
])
def test_full_size_parameter_counts(spec, shape, expected):
    assert n_params(build(spec, spec.get("num_classes", 10)), shape) == expected


def test_serial_net_counts_and_conv_bias_rule():
    # depth 32: 31 convs + 1 Linear; conv bias only without norm (GNEDNN, REFERENCE.md §1.5)
    widths = [16] * 11 + [32] * 10 + [64] * 10
    assert len(widths) == 31
    plain = sum(conv(a, b, 3, bias=True) for a, b in zip([3, *widths[:-1]], widths))
    assert n_params(build({"name": "serial_net", "depth": 32, "norm": "none"}, 10),
                    (32, 32, 3)) == plain + linear(64, 10)
    normed = sum(conv(a, b, 3) + bn(b) for a, b in zip([3, *widths[:-1]], widths))
    assert n_params(build({"name": "serial_net", "depth": 32}, 10),
                    (32, 32, 3)) == normed + linear(64, 10)


def test_lubana_conv_bias_only_for_reparametrised_convs():
    shape = (8, 8, 3)
    plain = build({"name": "resnet56_lubana", "depth": 8, "width": 4, "norm": "none"}, 10)
    v = jax.eval_shape(lambda: plain.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape))))
    assert "bias" not in v["params"]["stage1_block0"]["conv1"]  # Plain: no bias
    sws = build({"name": "resnet56_lubana", "depth": 8, "width": 4, "norm": "none",
                 "conv": "sws"}, 10)
    v = jax.eval_shape(lambda: sws.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape))))
    assert "bias" in v["params"]["stage1_block0"]["conv1"]
    # GNEDNN's rule is the other way round: a bias exactly when there is no norm
    gne = build({"name": "resnet_cifar", "depth": 8, "width": 4, "norm": "none"}, 10)
    v = jax.eval_shape(lambda: gne.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape))))
    assert "bias" in v["params"]["stage1_block0"]["conv1"]


# ------------------------------------------------------------------------------------------------
# Structure and init


def _intermediates(model, variables, x, **kw):
    _, state = apply(model, variables, x, capture_intermediates=True,
                     mutable=["intermediates", "batch_stats"], **kw)
    return state["intermediates"]


def test_densenet_as_written_transition_and_fix():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 32, 32, 3))
    model = build({"name": "densenet_cifar", "growth": 2, "block_sizes": (1, 1, 1)}, 10)
    v = init(model, x, 1)
    inter = _intermediates(model, v, x)
    t1, t2 = inter["trans1"]["__call__"][0], inter["trans2"]["__call__"][0]
    assert t1.shape[1:3] == (17, 17) and t2.shape[1:3] == (10, 10)  # 32 → 17 → 10
    # 1×1 conv, padding 1, stride 2, no bias: output (0, ·) and (·, 0) see only padding
    np.testing.assert_array_equal(t1[:, 0], 0.0)
    np.testing.assert_array_equal(t1[:, :, 0], 0.0)
    # 17 → 10: output index 9 reads input index 17, also padding
    np.testing.assert_array_equal(t2[:, 9], 0.0)
    assert np.count_nonzero(np.asarray(t1[:, 1:, 1:])) > 0.5 * t1[:, 1:, 1:].size
    fixed = build({"name": "densenet_cifar", "growth": 2, "block_sizes": (1, 1, 1),
                   "transition_padding": 0}, 10)
    inter = _intermediates(fixed, init(fixed, x), x)
    assert inter["trans1"]["__call__"][0].shape[1:3] == (16, 16)
    assert inter["trans2"]["__call__"][0].shape[1:3] == (8, 8)


def test_densenet_avg8_head_reads_the_top_left_window():
    # PyTorch avg_pool2d(8) on the 10×10 final map averages rows/cols 0–7 only [as-written]
    kw = {"name": "densenet_cifar", "growth": 2, "block_sizes": (1, 1, 1)}
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    for pool in ("avg8", "global"):
        model = build({**kw, "head_pool": pool}, 10)
        v = init(model, x, 1)
        logits, state = apply(model, v, x, capture_intermediates=True,
                              mutable=["intermediates"])
        f = np.maximum(np.asarray(state["intermediates"]["final_norm"]["__call__"][0]), 0.0)
        assert f.shape[1:3] == (10, 10)
        pooled = f[:, :8, :8].mean(axis=(1, 2)) if pool == "avg8" else f.mean(axis=(1, 2))
        head = jax.tree.map(np.asarray, v["params"]["head"])
        np.testing.assert_allclose(logits, pooled @ head["kernel"] + head["bias"], rtol=1e-5,
                                   atol=1e-6)
        assert not np.allclose(f[:, :8, :8].mean(axis=(1, 2)), f.mean(axis=(1, 2)))


def test_mobilenet_layers_and_as_written_gain():
    shape = (32, 32, 3)
    model = build({"name": "mobilenet_v1", "width": 0.25}, 10)
    p = init(model, jnp.zeros((1, *shape)), 0)["params"]  # gain 1 by default [as-written]
    assert p["block0"]["dw"]["conv"]["kernel"].shape == (3, 3, 1, 8)  # one group per channel
    assert p["block0"]["pw"]["conv"]["kernel"].shape == (1, 1, 8, 16)
    k = p["block12"]["pw"]["conv"]["kernel"]  # (1, 1, 256, 256)
    assert float(jnp.std(k)) == pytest.approx(1 / math.sqrt(256), rel=0.02)  # gain 1
    relu_gain = build({"name": "mobilenet_v1", "width": 0.25, "gain": None}, 10)
    k = init(relu_gain, jnp.zeros((1, *shape)), 0)["params"]["block12"]
    assert float(jnp.std(k["pw"]["conv"]["kernel"])) == pytest.approx(math.sqrt(2 / 256),
                                                                      rel=0.02)
    dense = build({"name": "mobilenet_v1", "width": 0.25, "dense": True}, 10)
    p = jax.eval_shape(lambda: dense.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape))))[
        "params"]
    assert p["block1"]["conv"]["kernel"].shape == (3, 3, 16, 32)


def test_serial_net_stem_uses_weight_init_and_head_is_kaiming_relu():
    model = build({"name": "serial_net", "depth": 8, "weight_init": "orthogonal"}, 10)
    p = init(model, jnp.zeros((1, 8, 8, 3)), 0)["params"]
    w = np.asarray(p["stem"]["kernel"])  # (3, 3, 3, 16): PyTorch flattening (16, 27)
    flat = w.transpose(3, 2, 0, 1).reshape(16, 27)
    np.testing.assert_allclose(flat @ flat.T, 2.0 * np.eye(16), atol=1e-5)  # gain² = 2 (ReLU)


def test_cifar_fixup_gain_on_both_block_convs():
    # GNEDNN: gain × L^(−p/(2m)), L = (depth − 2)/m (§1.6); ResNet-56, m=2: p=2 → ×0.19245,
    # p=1.5 → ×0.2903 (REFERENCE.md's values; 27^(−3/8) = 0.29056, so its 0.2903 is rounded)
    assert fixup_factor(56, 2.0, 2.0) == pytest.approx(0.19245, abs=1e-5)
    assert fixup_factor(56, 1.5, 2.0) == pytest.approx(0.2903, abs=5e-4)
    # on a ResNet-20 (L = 9, p = 2, m = 2 → ×1/3), both block convs scaled, nothing else
    kw = {"name": "fixup_resnet_cifar", "depth": 20, "width": 4}
    x = jnp.zeros((1, 8, 8, 3))
    base = init(build(kw, 10), x, 0)["params"]
    fix = init(build({**kw, "fixup": True, "fixup_p": 2.0, "fixup_m": 2.0}, 10), x, 0)["params"]
    for blk in ("stage1_block0", "stage2_block2", "stage3_block0"):
        for conv_name in ("conv1", "conv2"):
            np.testing.assert_allclose(fix[blk][conv_name]["kernel"],
                                       base[blk][conv_name]["kernel"] / 3, rtol=1e-6)
    np.testing.assert_array_equal(fix["stem"]["kernel"], base["stem"]["kernel"])  # 'i' marker
    np.testing.assert_array_equal(fix["head"]["kernel"], base["head"]["kernel"])
    assert sorted(fix["stage3_block0"]) == ["bias0", "bias1", "bias2", "bias3", "conv1",
                                            "conv2", "scale"]
    assert "bias" not in fix["stage3_block0"]["conv1"]  # Fixup scalars: no conv bias
    assert "bias0" in fix and "bias2" in fix
    # the block conv std is the kaiming ReLU std times the factor (16·9·4 = 576 weights)
    k = fix["stage3_block1"]["conv1"]["kernel"]  # (3, 3, 16, 16)
    assert float(jnp.std(k)) == pytest.approx(math.sqrt(2 / (9 * 16)) / 3, rel=0.1)


def test_cifar_fixup_scalars_forward_matches_numpy_block():
    # stem and first block re-derived in float64: h = act(conv(x) + bias0);
    # block = act(conv2(act(conv1(h + b0) + b1) + b2)·scale + b3 + (h + b0))
    model = build({"name": "fixup_resnet_cifar", "depth": 8, "width": 4}, 10)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    v = init(model, x, 1)
    params = jax.tree.map(lambda a: a + 0.1, v["params"])  # non-trivial scalars
    got = _intermediates(model, {"params": params}, x)["stage1_block0"]["__call__"][0]
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    b = p["stage1_block0"]

    def conv3(z, w):  # 3×3, stride 1, padding 1, NHWC / HWIO, by explicit shifts
        zp = np.pad(z, ((0, 0), (1, 1), (1, 1), (0, 0)))
        h, w_ = z.shape[1:3]
        return sum(zp[:, i:i + h, j:j + w_] @ w[i, j] for i in range(3) for j in range(3))

    h = np.maximum(conv3(np.asarray(x, np.float64), p["stem"]["kernel"]) + p["bias0"], 0)
    xb = h + b["bias0"]
    y = np.maximum(conv3(xb, b["conv1"]["kernel"]) + b["bias1"], 0)
    y = conv3(y + b["bias2"], b["conv2"]["kernel"]) * b["scale"] + b["bias3"]
    np.testing.assert_allclose(got, np.maximum(y + xb, 0), rtol=1e-4, atol=1e-5)


def test_lubana_skipinit_blocks_are_identity_at_init():
    # post-activation with skip_gain = 0: block = relu(0 + x) = x for stride-1 blocks (x ≥ 0)
    model = build({"name": "resnet56_lubana", "depth": 14, "width": 4, "skipinit": True}, 10)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    v = init(model, x, 1)
    inter = _intermediates(model, v, x)
    np.testing.assert_array_equal(inter["stage1_block1"]["__call__"][0],
                                  inter["stage1_block0"]["__call__"][0])
    np.testing.assert_array_equal(inter["stage3_block1"]["__call__"][0],
                                  inter["stage3_block0"]["__call__"][0])
    # preact: stem conv-norm-act kept, no final norm; stride-1 blocks are the identity
    pre = build({"name": "resnet56_lubana", "depth": 14, "width": 4, "skipinit": True,
                 "preact": True}, 10)
    pv = init(pre, x, 1)
    assert "stem_norm" in pv["params"] and "final_norm" not in pv["params"]
    inter = _intermediates(pre, pv, x)
    np.testing.assert_array_equal(inter["stage2_block1"]["__call__"][0],
                                  inter["stage2_block0"]["__call__"][0])


def _check_fixup_at_init(model, x):
    v = init(model, x)
    logits, state = apply(model, v, x, capture_intermediates=True, mutable=["intermediates"])
    inter = state["intermediates"]
    np.testing.assert_array_equal(logits, 0.0)  # fc weight and bias 0
    # last branch conv 0 and scale 1: every stride-1, same-width block is relu(0 + x) = x
    names = sorted(k for k in inter if k.startswith("layer"))
    checked = 0
    for prev, cur in zip(names, names[1:]):
        if prev[:6] == cur[:6]:  # same stage, not the first block
            np.testing.assert_array_equal(inter[cur]["__call__"][0], inter[prev]["__call__"][0])
            checked += 1
    assert checked == sum(1 for n in names if not n.endswith("_0"))
    for blk in names:
        last = "conv3" if "conv3" in v["params"][blk] else "conv2"
        np.testing.assert_array_equal(v["params"][blk][last]["kernel"], 0.0)
        assert float(v["params"][blk]["scale"]) == 1.0


@pytest.mark.parametrize("variant", ["original", "ours"])
def test_fixup_basic_resnet_zero_logits_and_identity_blocks_at_init(variant):
    model = build({"name": "fixup_resnet", "arch": "resnet18", "variant": variant,
                   "cifar_stem": True}, 10)
    _check_fixup_at_init(model, jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3)))


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["original", "ours"])
def test_fixup_resnet50_zero_logits_and_identity_blocks_at_init(variant):
    model = build({"name": "fixup_resnet50", "variant": variant}, 10)
    _check_fixup_at_init(model, jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3)))


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
    if not hasattr(inits, "leakynet_layer_inits"):
        pytest.skip("gnj.nn.inits.leakynet_layer_inits not there yet (inits engineer)")
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


# ------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("spec,shape,msg", [
    ({"name": "resnet_cifar", "depth": 21}, (32, 32, 3),
     r"resnet_cifar: depth 21 is not 6n\+2 .* allowed: 8, 14, 20"),
    ({"name": "serial_net", "depth": 30}, (32, 32, 3), r"serial_net: depth 30 is not 6n\+2"),
    ({"name": "resnet56_lubana", "depth": 55}, (32, 32, 3), r"resnet56_lubana: depth 55"),
    ({"name": "wrn_constnet", "depth": 14}, (32, 32, 3),
     r"wrn_constnet: depth 14 is not 3n\+4 .* allowed: 7, 10, 13, 16"),
    ({"name": "leakynet", "depth": 12}, (32, 32, 3), r"leakynet: depth 12 is not 3n\+4"),
    ({"name": "resnet_cifar", "depth": 20}, (2, 2, 3), r"resnet_cifar: input .* too small"),
    ({"name": "wrn_constnet"}, (2, 2, 3), r"wrn_constnet: input .* too small"),
    ({"name": "leakynet", "depth": 7, "init_string": "1_i_i_i"}, (2, 2, 3),
     r"leakynet: input .* too small"),
    ({"name": "mobilenet_v1"}, (16, 16, 3), r"mobilenet_v1: input .* need NHWC with H, W ≥ 32"),
    ({"name": "densenet_cifar"}, (16, 16, 3),
     r"densenet_cifar: input \(16, 16\) gives a final map of \[6, 6\]; head_pool='avg8'"),
    ({"name": "densenet_cifar", "head_pool": "max"}, (32, 32, 3),
     r"densenet_cifar: head_pool 'max'; valid: avg8, global"),
    ({"name": "densenet_cifar", "transition_padding": 2}, (32, 32, 3),
     r"transition_padding 2; valid: 0, 1"),
    ({"name": "vgg", "cfg": "cfg_10"}, (8, 8, 3), r"vgg: input .* too small for 4 stride-2"),
    ({"name": "fixup_resnet50"}, (16, 16, 3), r"fixup_resnet: input .* H, W ≥ 32"),
    ({"name": "fixup_resnet_cifar", "norm": "batch"}, (32, 32, 3),
     r"scalars=True .* needs norm='none'"),
])
def test_bad_input_names_model_value_and_allowed(spec, shape, msg):
    model = build(spec, 10)
    with pytest.raises(ValueError, match=msg):
        jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape))))


def test_group_norm_registered_for_zoo_combos():
    # the registry-wide test relies on these names; fail loudly if a rename breaks them
    assert "batch" in NORMS and "none" in NORMS


def test_lubana_preact_without_norm_shortcut_reads_the_inplace_relu():
    """Beyond-BN preact block, no norm, SkipInit gain 0: the output is the identity shortcut,
    which in the reference reads the block input after its in-place ReLU."""
    from gnj.models.layers import Layers
    from gnj.models.resnet_cifar import PreActBlock
    from gnj.proj.beyond_bn.models import InplaceReluPreActBlock

    x = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 4, 3))
    layers = Layers.from_specs(norm="none")
    for reads_relu, expected in ((True, np.maximum(np.asarray(x), 0)), (False, np.asarray(x))):
        cls = InplaceReluPreActBlock if reads_relu else PreActBlock
        block = cls(3, 1, layers, "C", skipinit=True)
        v = block.init(jax.random.PRNGKey(0), x)
        np.testing.assert_allclose(block.apply(v, x), expected, rtol=1e-6)
    lubana = build({"name": "resnet56_lubana", "norm": "none", "preact": True}, 10)
    assert lubana.block_class() is InplaceReluPreActBlock
    assert build({"name": "resnet56_lubana", "preact": True}, 10).block_class() is PreActBlock


def test_densenet_without_norm_concatenates_the_inplace_activation():
    """GNEDNN bottleneck, no norm, in-place leaky ReLU: the concatenated input is act(x)."""
    from gnj.models.densenet import Bottleneck
    from gnj.models.layers import Layers
    from gnj.proj.gne.models import InplaceActBottleneck

    x = jax.random.normal(jax.random.PRNGKey(3), (2, 4, 4, 3))
    act = "leaky_relu(negative_slope=0.3)"
    leaky = np.where(np.asarray(x) > 0, np.asarray(x), 0.3 * np.asarray(x))
    layers = Layers.from_specs(norm="none", act=act, conv_bias=True)
    for cls, expected in ((InplaceActBottleneck, leaky), (Bottleneck, np.asarray(x))):
        block = cls(2, layers)
        y = block.apply(block.init(jax.random.PRNGKey(0), x), x)
        np.testing.assert_allclose(y[..., 2:], expected, rtol=1e-6)
    model = build({"name": "densenet_cifar", "norm": "none", "act": act}, 10)
    assert model.block_class() is InplaceActBottleneck
    assert build({"name": "densenet_cifar"}, 10).block_class() is Bottleneck
