"""Architecture zoo, part 1: parameter counts at full size against closed forms written here (and
published counts where there are some), MobileNet layers and gain, and bad-input errors (the
paper-specific structure tests are in tests/proj/<paper>/)."""

import math

import jax
import jax.numpy as jnp
import pytest

from gnj.models import build
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


# ------------------------------------------------------------------------------------------------
# Structure and init


def _intermediates(model, variables, x, **kw):
    _, state = apply(model, variables, x, capture_intermediates=True,
                     mutable=["intermediates", "batch_stats"], **kw)
    return state["intermediates"]


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

