"""Zoo part 2 (torchvision ResNets/MobileNetV2 and the registry-wide tiny builds): closed-form
parameter counts, forwards against NumPy re-derivations, init conventions and bad input."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.analysis import blocks
from gnj.models import build, mobilenet_v2
from gnj.models.common import is_block


def n_params(model, shape):
    v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape))))
    return sum(x.size for x in jax.tree.leaves(v["params"]))


def conv(cin, cout, k, groups=1):
    return cin // groups * cout * k * k


def bn(c):
    return 2 * c


def _random_variables(model, shape, seed):
    """Random float64 values for every variable (variances and scales in [0.5, 1.5]); only the
    shapes come from the model (``eval_shape``: nothing is compiled)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, *shape)))

    def leaf(path, x):
        if path[-1].key in ("var", "scale"):
            return rng.uniform(0.5, 1.5, x.shape)
        return rng.normal(0, 0.4, x.shape)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


# ------------------------------------------------------------------------------------------------
# Parameter counts (closed forms written here, checked against torchvision's published counts)


def torchvision_resnet(kind, layers, groups=1, base_width=64, classes=1000):
    total, inplanes = conv(3, 64, 7) + bn(64), 64
    for stage, n in enumerate(layers):
        planes = 64 * 2**stage
        for i in range(n):
            if kind == "basic":
                out = planes
                total += conv(inplanes, planes, 3) + conv(planes, planes, 3) + 2 * bn(planes)
            else:
                width = planes * base_width // 64 * groups
                out = 4 * planes
                total += conv(inplanes, width, 1) + conv(width, width, 3, groups) + \
                    conv(width, out, 1) + 2 * bn(width) + bn(out)
            if i == 0 and inplanes != out:
                total += conv(inplanes, out, 1) + bn(out)
            inplanes = out
    return total + inplanes * classes + classes


def torchvision_mobilenet_v2(classes=1000):
    # standard setting at width 1: rows (t, c, n, s); stem 32, last 1280
    rows = [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]
    total, inp = conv(3, 32, 3) + bn(32), 32
    for t, c, n in rows:
        for _ in range(n):
            hidden = inp * t
            if t != 1:
                total += conv(inp, hidden, 1) + bn(hidden)
            total += conv(hidden, hidden, 3, hidden) + bn(hidden) + conv(hidden, c, 1) + bn(c)
            inp = c
    return total + conv(320, 1280, 1) + bn(1280) + 1280 * classes + classes


def test_closed_forms_reproduce_torchvision_published_counts():
    assert torchvision_resnet("basic", (2, 2, 2, 2)) == 11_689_512
    assert torchvision_resnet("bottleneck", (3, 4, 6, 3)) == 25_557_032
    assert torchvision_resnet("bottleneck", (3, 4, 6, 3), 32, 4) == 25_028_904
    assert torchvision_resnet("bottleneck", (3, 4, 6, 3), 1, 128) == 68_883_240
    assert torchvision_mobilenet_v2() == 3_504_872


@pytest.mark.parametrize("name,expected", [
    ("resnet18", torchvision_resnet("basic", (2, 2, 2, 2))),
    ("resnet34", torchvision_resnet("basic", (3, 4, 6, 3))),
    ("resnet50", torchvision_resnet("bottleneck", (3, 4, 6, 3))),
    ("resnet101", torchvision_resnet("bottleneck", (3, 4, 23, 3))),
    ("resnext50_32x4d", torchvision_resnet("bottleneck", (3, 4, 6, 3), 32, 4)),
    ("wide_resnet50_2", torchvision_resnet("bottleneck", (3, 4, 6, 3), 1, 128)),
    ("mobilenet_v2", torchvision_mobilenet_v2()),
])
def test_full_size_parameter_counts(name, expected):
    assert n_params(build({"name": name}, 1000), (32, 32, 3)) == expected


def test_resnet_cifar_stem_count():
    # the 7×7 stem conv becomes 3×3 (64·3·(49 − 9) fewer weights); nothing else changes
    full = torchvision_resnet("basic", (2, 2, 2, 2), classes=10)
    got = n_params(build({"name": "resnet18", "cifar_stem": True}, 10), (32, 32, 3))
    assert got == full - 3 * 64 * (49 - 9)


def test_mobilenet_v2_structure_and_init():
    stem, specs, last = mobilenet_v2.block_specs(1.0, mobilenet_v2.STANDARD_SETTING)
    assert (stem, last, len(specs)) == (32, 1280, 17)
    assert [s.residual for s in specs].count(True) == 10
    assert mobilenet_v2.make_divisible(32 * 0.35) == 16 and mobilenet_v2.make_divisible(35.2) == 32
    # the first rows of the standard setting (the head is the full 1280 → 1000 classifier)
    m = build({"name": "mobilenet_v2",
               "inverted_residual_setting": mobilenet_v2.STANDARD_SETTING[:2]}, 1000)
    v = jax.jit(m.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
    fc = np.asarray(v["classifier"]["kernel"])
    assert fc.shape == (1280, 1000) and abs(fc.std() - 0.01) < 3e-4
    assert not np.asarray(v["classifier"]["bias"]).any()
    k = np.asarray(v["last"]["conv"]["kernel"])  # 1×1, 24 → 1280: fan_out 1280
    assert abs(k.std() - np.sqrt(2 / 1280)) < 0.02 * np.sqrt(2 / 1280)
    # depthwise 3×3 over 16·6 = 96 channels: PyTorch's fan_out ignores groups → 9·96
    dw = np.asarray(v["block1"]["depthwise"]["conv"]["kernel"])
    assert dw.shape == (3, 3, 1, 96)
    assert abs(dw.std() - np.sqrt(2 / 864)) < 0.06 * np.sqrt(2 / 864)
    assert "expand" not in v["block0"] and "expand" in v["block1"]


def test_mobilenet_v2_dropout_and_residual():
    m = build({"name": "mobilenet_v2", "width_mult": 0.25, "norm": "none",
               "inverted_residual_setting": ((1, 8, 2, 1),)}, 3)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 3)), jnp.float32)
    v = m.init(jax.random.PRNGKey(0), x)
    a = m.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    b = m.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.allclose(a, b)
    nodrop = build({"name": "mobilenet_v2", "width_mult": 0.25, "norm": "none", "dropout": 0.0,
                    "inverted_residual_setting": ((1, 8, 2, 1),)}, 3)
    np.testing.assert_allclose(nodrop.apply(v, x, train=True), m.apply(v, x), rtol=1e-6)
    # the second block (8 → 8, stride 1) is residual: zeroing its projection makes it the identity
    ins = blocks.block_inputs(m, v, x)
    p = jax.tree.map(lambda t: t, v)
    p["params"]["block1"]["project"]["kernel"] = jnp.zeros_like(
        p["params"]["block1"]["project"]["kernel"])
    f = blocks.block_function(m, p, x, "block1")
    np.testing.assert_allclose(f(ins["block1"]), ins["block1"], rtol=0, atol=0)


def test_resnet_any_norm_everywhere_and_blocks():
    m = build({"name": "resnet50", "norm": "group(groups=2)", "cifar_stem": True}, 10)
    v = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    p = v["params"]
    assert set(p["layer2_0"]) >= {"downsample_conv", "downsample_bn", "bn3"}
    assert p["conv1"]["kernel"].shape == (3, 3, 3, 64)
    assert "batch_stats" not in v  # group norm everywhere, downsample norms included


def test_resnet_zero_init_residual_makes_blocks_identity_plus_relu():
    m = build({"name": "resnet18", "cifar_stem": True, "zero_init_residual": True}, 10)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    v = m.init(jax.random.PRNGKey(0), x)
    assert not np.asarray(v["params"]["layer1_0"]["bn2"]["scale"]).any()
    ins = blocks.block_inputs(m, v, x)
    f = blocks.block_function(m, v, x, "layer1_1")
    np.testing.assert_allclose(f(ins["layer1_1"]), jax.nn.relu(ins["layer1_1"]), atol=1e-6)
    with pytest.raises(ValueError, match="zero_init_residual needs a norm with a learnable scale"):
        build({"name": "resnet18", "norm": "none", "zero_init_residual": True}, 10).init(
            jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))


def test_resnet_convs_are_kaiming_fan_out():
    m = build({"name": "resnet18"}, 10)
    v = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
    k = np.asarray(v["layer4_0"]["conv2"]["kernel"])  # 3×3, 512 → 512: fan_out 9·512
    assert abs(k.std() - np.sqrt(2 / (9 * 512))) < 0.01 * np.sqrt(2 / (9 * 512))


@pytest.mark.parametrize("name", ["dense_mlp", "dense_cnn", "dense_cnn_depthwise", "mobilenet_v2",
                                  "resnet_imagenet"])
def test_tiny_builds_train_and_expose_blocks(name):
    from gnj.registry import MODELS

    kw = dict(MODELS.get(name).tiny)
    shape = kw.pop("input_shape")
    m = MODELS.get(name)(num_classes=3, **kw)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, *shape)), jnp.float32)
    v = m.init(jax.random.PRNGKey(0), x)
    y, _ = m.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
    assert y.shape == (2, 3) and np.isfinite(np.asarray(y)).all()
    found = []
    import flax.linen as nn

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and is_block(context.module):
            found.append(type(context.module).__name__)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        m.apply(v, x)
    assert found


# ------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("spec,shape,msg", [
    ({"name": "dense_mlp", "width": 4, "depth": 4, "tc": 9}, (4, 4, 1),
     "dense_mlp: tc 9 exceeds the largest link pool \\(8"),
    ({"name": "dense_mlp", "depth": 2}, (4, 4, 1), "dense_mlp: depth 2 must be ≥ 3"),
    ({"name": "dense_cnn", "tc": (40, 80, 2000)}, (32, 32, 3),
     "dense_cnn: tc 2000 of cell 2 exceeds the largest link pool \\(1408"),
    ({"name": "dense_cnn_depthwise", "tc": (1, 2)}, (32, 32, 3),
     "dense_cnn_depthwise: tc \\(1, 2\\) needs one entry per cell \\(num_cells=3\\)"),
    ({"name": "dense_cnn", "kind": "sparse"}, (32, 32, 3), "unknown kind 'sparse'; valid: regular"),
    ({"name": "dense_cnn", "head": "max"}, (32, 32, 3), "unknown head 'max'; valid: avgpool2"),
    ({"name": "dense_cnn", "cell_depth": 2}, (32, 32, 3), "dense_cnn: cell_depth 2 must be ≥ 3"),
    ({"name": "dense_cnn"}, (4, 4, 3), "dense_cnn: input shape \\(4, 4, 3\\) is too small.*5×5"),
    ({"name": "mobilenet_v2"}, (16, 16, 3), "mobilenet_v2: input .* too small.*32×32"),
    ({"name": "mobilenet_v2", "inverted_residual_setting": ((6, 16, 1),)}, (32, 32, 3),
     "mobilenet_v2: inverted_residual_setting .* 4-element rows"),
    ({"name": "mobilenet_v2", "inverted_residual_setting": ((6, 16, 1, 3),)}, (32, 32, 3),
     "s in \\(1, 2\\)"),
    ({"name": "resnet_imagenet", "arch": "resnet20"}, (32, 32, 3),
     "resnet: unknown arch 'resnet20'; valid: resnet18, resnet34"),
    ({"name": "resnet50"}, (16, 16, 3), "resnet \\(resnet50\\): input .* too small.*32×32"),
])
def test_bad_input_names_model_value_and_allowed(spec, shape, msg):
    m = build(spec, 10)
    with pytest.raises(ValueError, match=msg):
        m.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape)))
