"""GNE CIFAR/ImageNet nets: serial nets, the reference DenseNet-BC (as-written transitions,
avg8 head, in-place activation), CIFAR Fixup gain and scalars, Fixup ResNets at init."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.models import build
from gnj.proj.gne.models import fixup_factor
from tests.models.test_zoo_part1 import (
    _intermediates,
    apply,
    bn,
    conv,
    init,
    linear,
    n_params,
)


def test_serial_net_counts_and_conv_bias_rule():
    # depth 32: 31 convs + 1 Linear; conv bias only without norm (docs/proj/gne.md#serial-nets)
    widths = [16] * 11 + [32] * 10 + [64] * 10
    assert len(widths) == 31
    plain = sum(conv(a, b, 3, bias=True) for a, b in zip([3, *widths[:-1]], widths))
    assert n_params(build({"name": "serial_net", "depth": 32, "norm": "none"}, 10),
                    (32, 32, 3)) == plain + linear(64, 10)
    normed = sum(conv(a, b, 3) + bn(b) for a, b in zip([3, *widths[:-1]], widths))
    assert n_params(build({"name": "serial_net", "depth": 32}, 10),
                    (32, 32, 3)) == normed + linear(64, 10)


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


def test_serial_net_stem_uses_weight_init_and_head_is_kaiming_relu():
    model = build({"name": "serial_net", "depth": 8, "weight_init": "orthogonal"}, 10)
    p = init(model, jnp.zeros((1, 8, 8, 3)), 0)["params"]
    w = np.asarray(p["stem"]["kernel"])  # (3, 3, 3, 16): PyTorch flattening (16, 27)
    flat = w.transpose(3, 2, 0, 1).reshape(16, 27)
    np.testing.assert_allclose(flat @ flat.T, 2.0 * np.eye(16), atol=1e-5)  # gain² = 2 (ReLU)


def test_cifar_fixup_gain_on_both_block_convs():
    # gain × L^(−p/(2m)), L = (depth − 2)/m (docs/proj/gne.md#cifar-fixup); ResNet-56, m=2:
    # p=2 → ×0.19245,
    # p=1.5 → ×0.2903 (the paper rounds 27^(−3/8) = 0.29056 to 0.2903)
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


def test_densenet_inplace_activation_quirk_follows_activation_aliases():
    """The in-place quirk is decided on the canonical activation name: ``lrelu`` (an alias of
    ``leaky_relu``) gives the same net as ``leaky_relu``."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    spec = dict(name="densenet_cifar", growth=2, block_sizes=(2, 2, 2), norm="none")
    nets = [build({**spec, "act": act}, 10) for act in ("leaky_relu", "lrelu")]
    v = nets[0].init(jax.random.PRNGKey(1), x)
    np.testing.assert_array_equal(nets[0].apply(v, x), nets[1].apply(v, x))
