"""Model zoo: closed-form parameter counts, NN-Mass values, the dense MLP forward vs NumPy,
and bad sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.models import build
from gnj.proj.nn_mass import dense_mlp
from gnj.proj.nn_mass.mass import nn_mass


def n_params(model, shape):
    v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape))))
    return sum(x.size for x in jax.tree.leaves(v["params"]))


def conv(cin, cout, k, bias=False):
    return cin * cout * k * k + (cout if bias else 0)


def bn(c):
    return 2 * c


def resnet_cifar_count(n, widths=(16, 32, 64), shortcut="A", k_short=1, classes=10):
    total = conv(3, widths[0], 3) + bn(widths[0])
    cin = widths[0]
    for w in widths:
        for _ in range(n):
            total += conv(cin, w, 3) + bn(w) + conv(w, w, 3) + bn(w)
            if cin != w and shortcut != "A":
                total += conv(cin, w, k_short) + bn(w)
            cin = w
    return total + widths[-1] * classes + classes


def torchvision_count(kind, layers, groups=1, base_width=64, classes=1000):
    total, inplanes = conv(3, 64, 7) + bn(64), 64
    for stage, blocks in enumerate(layers):
        planes = 64 * 2**stage
        for i in range(blocks):
            if kind == "basic":
                out = planes
                total += conv(inplanes, planes, 3) + bn(planes)
                total += conv(planes, planes, 3) + bn(planes)
            else:
                width = int(planes * base_width / 64) * groups
                out = planes * 4
                total += conv(inplanes, width, 1) + bn(width)
                total += width * width // groups * 9 + bn(width)
                total += conv(width, out, 1) + bn(out)
            if i == 0 and (stage > 0 or inplanes != out):
                total += conv(inplanes, out, 1) + bn(out)
            inplanes = out
    return total + inplanes * classes + classes


@pytest.mark.parametrize("name,kwargs,shape,expected", [
    ("resnet_cifar", dict(depth=20), (32, 32, 3), resnet_cifar_count(3)),
    ("resnet_cifar", dict(depth=56), (32, 32, 3), resnet_cifar_count(9)),
    ("resnet_cifar", dict(depth=20, shortcut="B"), (32, 32, 3),
     resnet_cifar_count(3, shortcut="B", k_short=1)),
    ("resnet56_lubana", dict(num_classes=100), (32, 32, 3),
     resnet_cifar_count(9, (32, 64, 128), "C", 3, classes=100)),
    ("resnet18", {}, (64, 64, 3), torchvision_count("basic", (2, 2, 2, 2))),
    ("resnet50", {}, (64, 64, 3), torchvision_count("bottleneck", (3, 4, 6, 3))),
    ("resnext50_32x4d", {}, (64, 64, 3), torchvision_count("bottleneck", (3, 4, 6, 3), 32, 4)),
    ("wide_resnet50_2", {}, (64, 64, 3), torchvision_count("bottleneck", (3, 4, 6, 3), 1, 128)),
])
def test_parameter_counts_match_closed_forms(name, kwargs, shape, expected):
    assert n_params(build({"name": name, **kwargs}, kwargs.get("num_classes", None)), shape) \
        == expected


def test_torchvision_published_counts():
    # torchvision's documented parameter counts, which the closed form above must reproduce.
    assert torchvision_count("basic", (2, 2, 2, 2)) == 11_689_512
    assert torchvision_count("bottleneck", (3, 4, 6, 3)) == 25_557_032
    assert torchvision_count("bottleneck", (3, 4, 6, 3), 32, 4) == 25_028_904
    assert torchvision_count("bottleneck", (3, 4, 6, 3), 1, 128) == 68_883_240


def test_vgg_cfg10_count():
    widths = [64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    expected = sum(conv(a, b, 3) + bn(b) for a, b in zip([3] + widths[:-1], widths))
    expected += 512 * 100 + 100
    assert n_params(build({"name": "vgg", "cfg": "cfg_10"}, 100), (32, 32, 3)) == expected


def test_serial_net_has_no_skips_and_conv_bias_without_norm():
    m = build({"name": "serial_net", "depth": 20, "norm": "none"}, 10)
    # 19 convs with bias (no norm) + the classifier
    widths = [16] * 7 + [32] * 6 + [64] * 6
    expected = sum(conv(a, b, 3, bias=True) for a, b in zip([3] + widths[:-1], widths))
    assert n_params(m, (32, 32, 3)) == expected + 64 * 10 + 10


@pytest.mark.parametrize("spec,mass,density", [
    (dict(width=8, depth=8, tc=10), 22.095, 0.3452),
    (dict(width=8, depth=4, tc=20), 32.0, 1.0),
])
def test_nn_mass_dense_mlp(spec, mass, density):
    m = build({"name": "dense_mlp", **spec}, 10)
    # closed form: paths (j−1)·w for j = 2 … d−1, links min(tc, paths)
    w, d, tc = spec["width"], spec["depth"], spec["tc"]
    paths = [(j - 1) * w for j in range(2, d)]
    rho = sum(min(tc, p) for p in paths) / sum(paths)
    got = nn_mass(m)
    assert got.density == pytest.approx(rho) and got.density == pytest.approx(density, abs=1e-4)
    assert got.mass == pytest.approx(rho * w * d) and got.mass == pytest.approx(mass, abs=1e-3)


@pytest.mark.parametrize("arch,mass", [("resnet18", 3392), ("resnet34", 7104),
                                       ("resnet50", 9006.93)])
def test_nn_mass_resnets(arch, mass):
    assert nn_mass(build({"name": arch}, 1000)).mass == pytest.approx(mass, abs=0.01)


def test_nn_mass_undefined_model():
    with pytest.raises(ValueError, match="NN-Mass is defined for"):
        nn_mass(build({"name": "vgg"}, 10))


def test_dense_mlp_forward_matches_numpy():
    m = build({"name": "dense_mlp", "width": 3, "depth": 5, "tc": 4, "topology_seed": 7}, 2)
    x = np.random.default_rng(0).normal(size=(4, 6))
    with jax.enable_x64(True):
        v = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 6)))
        y = m.apply(v, jnp.asarray(x))
    p = jax.tree.map(np.asarray, v["params"])
    elu = lambda z: np.where(z > 0, z, np.exp(z) - 1)
    lin = lambda i, z: z @ p[f"layer{i}"]["kernel"] + p[f"layer{i}"]["bias"]
    links = dense_mlp.sample_links(3, 5, 4, 7)
    o = [elu(lin(0, x))]
    o.append(lin(1, o[0]))
    for j in range(2, 5):
        pool = np.concatenate(o[j - 2::-1], axis=1)
        inp = np.concatenate([o[j - 1], pool[:, links[j - 2]]], axis=1)
        o.append(lin(j, inp if j == 4 else elu(inp)))
    np.testing.assert_allclose(y, o[-1], rtol=1e-10)
    assert [len(k) for k in links] == [3, 4, 4]  # min(tc, (j−1)·w)


@pytest.mark.parametrize("spec,msg", [
    ({"name": "resnet_cifar", "depth": 21}, "resnet_cifar: depth 21 is not 6n\\+2"),
    ({"name": "serial_net", "depth": 12}, "serial_net: depth 12"),
    ({"name": "dense_mlp", "width": 4, "depth": 4, "tc": 9}, "tc 9 exceeds"),
    ({"name": "vgg", "cfg": "cfg_99"}, "unknown cfg 'cfg_99'"),
    ({"name": "resnet_imagenet", "arch": "resnet19"}, "unknown arch 'resnet19'"),
])
def test_bad_sizes_name_model_and_allowed_values(spec, msg):
    m = build(spec, 10)
    with pytest.raises(ValueError, match=msg):
        m.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))


def test_input_too_small_for_stride_stages():
    with pytest.raises(ValueError, match="too small"):
        build({"name": "vgg", "cfg": "cfg_10"}, 10).init(jax.random.PRNGKey(0),
                                                        jnp.zeros((1, 8, 8, 3)))


def test_unknown_model_option():
    with pytest.raises(ValueError, match="has no option"):
        build({"name": "vgg", "depth": 3}, 10)
