"""NN-Mass (Bhardwaj et al.; REFERENCE.md §4.2) against hand-derived closed forms and the
reference values of §4.2 (which were recomputed independently of this code)."""

from fractions import Fraction

import pytest

from gnj.models import build
from gnj.models.nn_mass import nn_mass


def test_dense_mlp_w8_d8_tc10_by_hand():
    # linked layers j = 2 … 7 have pools (j−1)·8 = 8, 16, …, 48 (Σ = 168) and take
    # min(10, pool) = 8, 10, 10, 10, 10, 10 links (Σ = 58)
    rho = Fraction(58, 168)
    got = nn_mass(build({"name": "dense_mlp", "width": 8, "depth": 8, "tc": 10}, 10))
    assert got.density == pytest.approx(float(rho), rel=1e-12)
    assert got.mass == pytest.approx(float(rho * 8 * 8), rel=1e-12)
    assert got.links == (8, 10, 10, 10, 10, 10) and got.paths == (8, 16, 24, 32, 40, 48)
    assert got.density == pytest.approx(0.3452, abs=1e-4) and got.mass == pytest.approx(22.095,
                                                                                         abs=1e-3)


def test_dense_mlp_defaults_are_fully_connected():
    # w8 d4 tc20: pools 8, 16, both fully linked → ρ = 1, NN-Mass = w·d = 32
    got = nn_mass(build({"name": "dense_mlp", "width": 8, "depth": 4, "tc": 20}, 10))
    assert got.density == 1.0 and got.mass == 32.0


def _cnn_by_hand(cell_depth, widths, tcs):
    mass, rhos = Fraction(0), []
    for w, tc in zip(widths, tcs):
        pools = [(j - 1) * w for j in range(2, cell_depth)]
        rho = Fraction(sum(min(tc, p) for p in pools), sum(pools))
        rhos.append(rho)
        mass += rho * w * cell_depth
    return mass, rhos


@pytest.mark.parametrize("name", ["dense_cnn", "dense_cnn_depthwise"])
def test_dense_cnn_train_cifar_default(name):
    # D 13, wm 2 → widths 32, 64, 128; Σ pools = 66·w; links 32 + 10·40, 11·80 capped at 64 once,
    # 11·125
    assert _cnn_by_hand(13, (32, 64, 128), (40, 80, 125))[1] == [
        Fraction(432, 2112), Fraction(864, 4224), Fraction(1375, 8448)]
    got = nn_mass(build({"name": name, "cell_depth": 13, "wm": 2, "tc": (40, 80, 125)}, 10))
    mass, rhos = _cnn_by_hand(13, (32, 64, 128), (40, 80, 125))
    assert got.mass == pytest.approx(float(mass), rel=1e-12)
    assert got.mass == pytest.approx(526.106, abs=1e-3)
    assert got.density == pytest.approx([float(r) for r in rhos], rel=1e-12)
    assert got.density == pytest.approx([0.2045, 0.2045, 0.1628], abs=1e-4)


def test_dense_cnn_readme_example_is_160():
    # D 8: 6 linked layers per cell, pools w·(1 … 6) = 21·w; tc never capped → ρ_k = 6·tc_k/(21·w),
    # mass = Σ 6·tc_k·8/21 = 48·70/21 = 160
    got = nn_mass(build({"name": "dense_cnn", "cell_depth": 8, "wm": 2, "tc": (10, 20, 40)}, 10))
    assert got.mass == pytest.approx(160.0, rel=1e-12)


def _basic(layers):
    pairs, inplanes = [], 64
    for stage, n in enumerate(layers):
        planes = 64 << stage
        pairs += [(inplanes, planes)] + [(planes, planes)] * (n - 1)
        inplanes = planes
    return sum(i + p for i, p in pairs)


def _bottleneck(layers, width_factor=1):
    total, inplanes = Fraction(0), 64
    for stage, n in enumerate(layers):
        planes = 64 << stage
        w = planes * width_factor
        for _ in range(n):
            total += Fraction((inplanes + 2 * w) * inplanes, 2 * inplanes + w)
            inplanes = 4 * planes
    return total


@pytest.mark.parametrize("arch,expected,published", [
    ("resnet18", _basic((2, 2, 2, 2)), 3392),
    ("resnet34", _basic((3, 4, 6, 3)), 7104),
    ("resnet50", _bottleneck((3, 4, 6, 3)), 9006.93),
    ("wide_resnet50_2", _bottleneck((3, 4, 6, 3), 2), None),
    ("resnext50_32x4d", _bottleneck((3, 4, 6, 3), 2), None),  # 32·4 = 128 = 2·64 in stage 1
])
def test_resnets(arch, expected, published):
    got = nn_mass(build({"name": arch}, 1000))
    assert got.mass == pytest.approx(float(expected), rel=1e-12)
    if published is not None:
        assert got.mass == pytest.approx(published, abs=0.005)
    assert len(got.blocks) == {"resnet18": 8, "resnet34": 16}.get(arch, 16)


def test_resnet_stem_choice_does_not_change_mass():
    a = nn_mass(build({"name": "resnet50"}, 10)).mass
    assert nn_mass(build({"name": "resnet50", "cifar_stem": True}, 10)).mass == a


def test_mobilenet_v2_standard_is_1287():
    # residual blocks: every repeat of a row (stride 1, same width), hidden = 6·c, so each adds
    # (c + 12c)·c/(2c + 6c) = 13c/8; repeats: 24 ×1, 32 ×2, 64 ×3, 96 ×2, 160 ×2
    expected = Fraction(13, 8) * (24 + 2 * 32 + 3 * 64 + 2 * 96 + 2 * 160)
    got = nn_mass(build({"name": "mobilenet_v2"}, 1000))
    assert got.mass == pytest.approx(float(expected), rel=1e-12) and float(expected) == 1287.0
    assert sum(b > 0 for b in got.blocks) == 10


def test_mobilenet_v2_nn_mass_deep_is_1797():
    # width 1.1: channels 16, 24, 32, 72, 104, 176, 352 after rounding to multiples of 8; the
    # second t=1 block (16 → 16, hidden 16) adds (16 + 32)·16/(32 + 16) = 16; the rest 13c/8 with
    # repeats 24 ×2, 32 ×3, 72 ×4, 104 ×3, 176 ×2
    expected = 16 + Fraction(13, 8) * (2 * 24 + 3 * 32 + 4 * 72 + 3 * 104 + 2 * 176)
    got = nn_mass(build({"name": "mobilenet_v2_nn_mass_deep"}, 1000))
    assert got.mass == pytest.approx(float(expected), rel=1e-12) and float(expected) == 1797.0
    same = build({"name": "mobilenet_v2", "width_mult": 1.1,
                  "inverted_residual_setting": ((1, 16, 2, 1), (6, 24, 3, 2), (6, 32, 4, 2),
                                                (6, 64, 5, 2), (6, 96, 4, 1), (6, 160, 3, 2),
                                                (6, 320, 1, 1))}, 1000)
    assert nn_mass(same).mass == got.mass


def test_mobilenet_without_residuals_has_zero_mass():
    m = build({"name": "mobilenet_v2", "inverted_residual_setting": ((6, 16, 1, 2),)}, 10)
    assert nn_mass(m).mass == 0.0


@pytest.mark.parametrize("name", ["vgg", "mlp", "resnet_cifar"])
def test_undefined_models_raise_and_list_supported(name):
    with pytest.raises(ValueError, match="NN-Mass is defined for dense_mlp, dense_cnn"):
        nn_mass(build({"name": name}, 10))


def test_large_tc_is_clamped_negative_tc_raises():
    # the paper's min(tc, paths): tc above every pool is "fully linked", whatever strict_tc says
    big = nn_mass(build({"name": "dense_cnn", "cell_depth": 4, "wm": 2, "tc": (200, 1, 1)}, 10))
    assert big.density[0] == 1.0
    with pytest.raises(ValueError, match="dense_cnn: tc -1 of cell 1 must be ≥ 0"):
        nn_mass(build({"name": "dense_cnn", "cell_depth": 4, "wm": 2, "tc": (1, -1, 1)}, 10))
    with pytest.raises(ValueError, match="dense_mlp: tc -2 must be ≥ 0"):
        nn_mass(build({"name": "dense_mlp", "width": 4, "depth": 4, "tc": -2}, 10))
