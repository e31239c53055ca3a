"""Initializers (docs/references.md: #orthogonal-inits, #fixup, #constant-init, #init-strings):
orthogonality, scales and fans, Fixup factors, averaging and init-string kernels re-built by
hand in NumPy (PyTorch layout, then moved to Flax's (kh, kw, in, out))."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.nn import inits
from gnj.registry import INITS

KEY = jax.random.PRNGKey(0)


def _torch_flat(w):
    """Flax kernel (*spatial, in, out) → PyTorch's flattened (out, in·kh·kw)."""
    w = np.asarray(w)
    return np.moveaxis(w, (-1, -2), (0, 1)).reshape(w.shape[-1], -1)


def _to_flax(w_torch):
    """PyTorch (out, in, kh, kw) → Flax (kh, kw, in, out)."""
    return np.transpose(w_torch, (2, 3, 1, 0))


# ----------------------------------------------------------------------------- orthogonal


@pytest.mark.parametrize("shape", [(8, 8), (12, 5), (5, 12),  # square, tall, wide dense
                                   (3, 3, 2, 4),  # conv, rows < cols: 4 × 18
                                   (1, 1, 8, 3), (3, 3, 2, 30)])  # 3 × 8, 30 × 18
def test_orthogonal_is_gain_times_orthonormal_rows_or_columns_in_torch_layout(shape):
    with jax.enable_x64(True):
        w = INITS.lookup("orthogonal(gain=1.7)")()(KEY, shape, jnp.float64)
        assert w.dtype == jnp.float64 and w.shape == shape
        flat = _torch_flat(w)
    rows, cols = flat.shape
    gram = flat @ flat.T if rows <= cols else flat.T @ flat
    np.testing.assert_allclose(gram, 1.7**2 * np.eye(min(rows, cols)), atol=1e-10)


def test_orthogonal_float32_to_1e5_and_not_fan_scaled():
    w = inits.orthogonal()(KEY, (3, 3, 16, 8))  # (8, 144): orthonormal rows, no 1/√fan
    flat = _torch_flat(w)
    np.testing.assert_allclose(flat @ flat.T, np.eye(8), atol=1e-5)


def test_orthogonal_keys_give_different_matrices():
    a, b = (inits.orthogonal()(jax.random.PRNGKey(s), (6, 6)) for s in (1, 2))
    assert not np.allclose(a, b)


@pytest.mark.parametrize("shape", [(3, 3, 4, 4), (3, 3, 4, 8), (3, 3, 8, 4), (5, 5, 3, 6),
                                   (3, 4, 6), (6, 4)])
def test_delta_orthogonal_only_centre_tap_orthogonal_times_gain_sqrt_out_over_in(shape):
    with jax.enable_x64(True):
        w = np.asarray(inits.delta_orthogonal(1.3)(KEY, shape, jnp.float64))
    centre = tuple(k // 2 for k in shape[:-2])
    tap = w[centre]
    rest = w.copy()
    rest[centre] = 0
    assert not rest.any()
    cin, cout = shape[-2:]
    q = tap / (1.3 * math.sqrt(cout / cin))
    gram = q @ q.T if cin <= cout else q.T @ q  # the short side is orthonormal
    np.testing.assert_allclose(gram, np.eye(min(cin, cout)), atol=1e-10)


def test_delta_orthogonal_conv_is_an_isometry_per_pixel():
    """With in = out the conv maps every pixel by the orthogonal tap: norms are preserved."""
    w = inits.delta_orthogonal()(KEY, (3, 3, 8, 8))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 5, 8))
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1),
                               rtol=1e-5)


# ----------------------------------------------------------------------------- kaiming family


@pytest.mark.parametrize("name", ["kaiming_normal", "kaiming_uniform"])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_std_is_gain_over_sqrt_fan(name, mode):
    shape = (3, 3, 48, 96)  # fan_in 432, fan_out 864; 41k samples → std within ~1 %
    w = np.asarray(INITS.lookup(f"{name}(mode={mode!r})", gain=math.sqrt(2))()(KEY, shape),
                   np.float64)
    fan = 9 * (48 if mode == "fan_in" else 96)
    assert w.std() == pytest.approx(math.sqrt(2 / fan), rel=0.03)
    assert abs(w.mean()) < 4 * math.sqrt(2 / fan) / math.sqrt(w.size)
    if name == "kaiming_uniform":  # U(±gain·√(3/fan))
        bound = math.sqrt(2) * math.sqrt(3 / fan)
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound


def test_gain_in_the_spec_overrides_the_activation_gain():
    """``kaiming_normal(gain=3.0)`` wins over the gain a model passes (GNEDNN's --gain)."""
    w = INITS.lookup("kaiming_normal(gain=3.0)", gain=math.sqrt(2))()(KEY, (256, 256))
    assert float(jnp.std(w)) == pytest.approx(3.0 / 16, rel=0.02)


def test_kaiming_bad_mode_raises():
    with pytest.raises(ValueError, match="mode 'fan_avg'; valid: fan_in, fan_out"):
        inits.kaiming_normal(mode="fan_avg")


def test_fans_of_dense_and_conv_kernels():
    assert inits.fans((7, 5)) == (7, 5)
    assert inits.fans((3, 3, 4, 6)) == (36, 54)
    with pytest.raises(ValueError, match="at least 2 dims"):
        inits.fans((5,))


# ----------------------------------------------------------------------------- Fixup


def test_fixup_factors_closed_forms():
    # CIFAR ResNet-56: m = 2, L = (56 − 2)/2 = 27; gain × L^(−p/(2m)).
    assert inits.fixup_scale(27, 2, "cifar", p=2) == pytest.approx(27 ** -0.5)
    assert inits.fixup_scale(27, 2, "cifar", p=2) == pytest.approx(0.19245, abs=1e-5)
    assert inits.fixup_scale(27, 2, "cifar", p=1.5) == pytest.approx(0.2903, abs=5e-4)
    # ImageNet original: L^(−1/(2m−2)); GNE "ours": −1/3 (bottleneck), −1/1.5 (basic).
    assert inits.fixup_scale(16, 3, "original") == pytest.approx(0.5)
    assert inits.fixup_scale(16, 2, "original") == pytest.approx(0.25)
    assert inits.fixup_scale(16, 3, "ours") == pytest.approx(16 ** (-1 / 3))
    assert inits.fixup_scale(8, 2, "ours") == pytest.approx(0.25)


@pytest.mark.parametrize("spec,std", [
    # (3, 3, 64, 128): fan_in 576, fan_out 1152.
    ("fixup(num_blocks=16, m=3, variant='original')", math.sqrt(2 / 1152) * 16 ** -0.25),
    ("fixup(num_blocks=16, m=3, variant='ours')", math.sqrt(2 / 576) * 16 ** (-1 / 3)),
    ("fixup(num_layers=8, m=2, variant='ours')", math.sqrt(2 / 576) * 8 ** (-1 / 1.5)),
    ("fixup(num_blocks=27, m=2, variant='cifar', p=2.0)", math.sqrt(2 / 576) / math.sqrt(27)),
    ("fixup_downsample(variant='original')", math.sqrt(2 / 1152)),
    ("fixup_downsample(variant='ours')", math.sqrt(1 / 576)),
])
def test_fixup_init_std(spec, std):
    w = INITS.lookup(spec, gain=math.sqrt(2))()(KEY, (3, 3, 64, 128))
    assert float(jnp.std(w)) == pytest.approx(std, rel=0.02)


def test_fixup_bad_arguments_raise():
    with pytest.raises(ValueError, match="needs num_blocks"):
        inits.fixup(m=3)
    with pytest.raises(ValueError, match="num_blocks=16 and num_layers=8 disagree"):
        inits.fixup(num_blocks=16, num_layers=8)
    with pytest.raises(ValueError, match="variant 'new'; valid: original, ours, cifar"):
        inits.fixup(num_blocks=16, variant="new")
    with pytest.raises(ValueError, match="m >= 2"):
        inits.fixup(num_blocks=16, m=1)
    with pytest.raises(ValueError, match="valid: original, ours"):
        inits.fixup_downsample(variant="cifar")


# ----------------------------------------------------------------------------- ConstNet


def test_const_avg_kernel_and_its_channel_mean():
    w = np.asarray(inits.const_avg()(KEY, (3, 3, 4, 6)))
    expected = np.zeros((6, 4, 3, 3))
    expected[:, :, 1, 1] = 1 / 4
    np.testing.assert_array_equal(w, _to_flax(expected))
    np.testing.assert_allclose(inits.const_avg()(KEY, (5, 2)), np.full((5, 2), 0.2))


@pytest.mark.parametrize("relu_gain,g", [(True, math.sqrt(2)), (False, 1.0)])
def test_varnet_std_uses_fan_out_and_sigma_w(relu_gain, g):
    """N(0, g·√(σ_W/k)), k = kh·kw·out = 9·128 (``--varnet``; docs/references.md#constant-init)."""
    w = inits.varnet(sigma_w=0.5, relu_gain=relu_gain)(KEY, (3, 3, 64, 128))
    assert float(jnp.std(w)) == pytest.approx(g * math.sqrt(0.5 / 1152), rel=0.02)


# ----------------------------------------------------------------------------- LeakyNet


def _identity_torch(cout, cin, const):
    w = np.zeros((cout, cin, 3, 3))
    for d in range(cout):
        w[d, d % cin, 1, 1] += const
    return w


def test_init_string_layer_inits_match_hand_built_kernels():
    """'1_i1_ix' with lrelu 0.5: stem avg (+), block 0 identity (+), block 1 average with
    phase −1 → −1/0.5, block 2 identity (+), block 3 'x' = 0.99·average(−1/0.5) + noise."""
    lrelu = 0.5
    layer_inits = inits.init_string_layer_inits("1_i1_ix", lrelu, 5)
    assert len(layer_inits) == 5
    shapes = [(3, 3, 3, 4), (3, 3, 4, 6), (3, 3, 6, 6), (3, 3, 6, 8), (3, 3, 8, 8)]
    ws = [np.asarray(f(jax.random.PRNGKey(i), s), np.float64)
          for i, (f, s) in enumerate(zip(layer_inits, shapes))]

    avg = np.zeros((4, 3, 3, 3))
    avg[:, :, 1, 1] = 1 / 3
    np.testing.assert_allclose(ws[0], _to_flax(avg), atol=1e-7)
    np.testing.assert_allclose(ws[1], _to_flax(_identity_torch(6, 4, 1.0)), atol=1e-7)
    avg = np.zeros((6, 6, 3, 3))
    avg[:, :, 1, 1] = -2.0 / 6  # phase −1 divided by lrelu
    np.testing.assert_allclose(ws[2], _to_flax(avg), atol=1e-7)
    np.testing.assert_allclose(ws[3], _to_flax(_identity_torch(8, 6, 1.0)), atol=1e-7)
    # Other char: 0.99·average + N(0, √(g·0.01/k)), g = √2·(1 + lrelu), k = fan_in = 72.
    avg = np.zeros((8, 8, 3, 3))
    avg[:, :, 1, 1] = -2.0 / 8
    noise = ws[4] - 0.99 * _to_flax(avg)
    assert noise.std() == pytest.approx(math.sqrt(math.sqrt(2) * 1.5 * 0.01 / 72), rel=0.1)


def test_init_string_h_and_k_scales():
    lrelu = 0.01
    g = math.sqrt(2) * (1 + lrelu)
    # 'h': variance g/fan_in (g not squared [as-written]).
    h = inits.init_string_init("h", 0, lrelu)(KEY, (3, 3, 64, 64))
    assert float(jnp.std(h)) == pytest.approx(math.sqrt(g / 576), rel=0.02)
    # 'k' at an odd block: 0.99·identity(−1/lrelu) + N(0, √(0.01·g/fan_in)).
    k = np.asarray(inits.init_string_init("k", 1, lrelu)(KEY, (3, 3, 64, 64)), np.float64)
    base = _to_flax(_identity_torch(64, 64, -1 / lrelu))
    assert (k - 0.99 * base).std() == pytest.approx(math.sqrt(0.01 * g / 576), rel=0.02)


def test_init_string_zero_slope_keeps_phase_minus_one():
    w = inits.init_string_init("i", 1, 0.0)(KEY, (3, 3, 2, 2))
    np.testing.assert_array_equal(w, _to_flax(_identity_torch(2, 2, -1.0)))


def test_init_string_bad_strings_raise():
    with pytest.raises(ValueError, match="has 5 layer chars.*expected 13"):
        inits.init_string_layer_inits("1_ii_ii", 0.01, 13)
    with pytest.raises(ValueError, match="has 5 layer chars.*expected 13"):
        inits.init_string_layer_inits("1_ii_ii", 0.01, depth=16)
    with pytest.raises(ValueError, match="depth=15"):
        inits.init_string_layer_inits("1_ii_ii", 0.01, depth=15)
    with pytest.raises(ValueError, match="empty init string"):
        inits.init_string_layer_inits("__", 0.01)
    layer_inits = inits.init_string_layer_inits("1_ii", 0.01)
    with pytest.raises(ValueError, match=r"block 1 \(layer 2\).*out ≥ in.*in=8, out=4"):
        layer_inits[2](KEY, (3, 3, 8, 4))


# ------------------------------------------------- xavier, identity_conv, ±identity, registry


def _conv_same(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("name", ["xavier_uniform", "xavier_normal"])
def test_xavier_std_is_gain_sqrt_2_over_fan_sum(name):
    w = np.asarray(INITS.lookup(name)(gain=2.0)(KEY, (200, 300)))
    assert w.std() == pytest.approx(2.0 * math.sqrt(2 / 500), rel=0.03)


@pytest.mark.parametrize("phase,slope,const", [(1.0, 0.0, 1.0), (-1.0, 0.0, -1.0),
                                               (-1.0, 0.25, -4.0), (1.0, 0.25, 1.0)])
def test_identity_conv_copies_channel_d_mod_in(phase, slope, const):
    w = INITS.lookup(f"identity_conv(phase={phase}, slope={slope})")()(KEY, (3, 3, 3, 7))
    x = jax.random.normal(jax.random.PRNGKey(2), (1, 5, 5, 3))
    y = np.asarray(_conv_same(x, w))
    for d in range(7):
        np.testing.assert_allclose(y[..., d], const * np.asarray(x)[..., d % 3], rtol=1e-6)
    with pytest.raises(ValueError, match="identity init needs out ≥ in channels, got in=7, out=3"):
        inits.identity_conv()(KEY, (3, 3, 7, 3))
    with pytest.raises(ValueError, match="phase=2"):
        inits.identity_conv(phase=2)


def test_init_string_plus_minus_identity_pair_composes_to_minus_x():
    """(+I, −I/α) through two leaky ReLUs of slope α is the linear map −x
    (docs/references.md#init-strings)."""
    lrelu = 0.2
    # Layers 1 and 2 are blocks 0 (phase +1) and 1 (phase −1).
    w0, w1 = (f(KEY, (3, 3, 4, 4)) for f in inits.init_string_layer_inits("i_ii", lrelu)[1:])
    x = jax.random.normal(jax.random.PRNGKey(3), (1, 5, 5, 4))
    y = jax.nn.leaky_relu(_conv_same(jax.nn.leaky_relu(_conv_same(x, w0), lrelu), w1), lrelu)
    np.testing.assert_allclose(y, -x, rtol=1e-5, atol=1e-6)


def test_every_registered_init_builds_its_shape_and_dtype():
    needs_args = {"fixup": {"num_blocks": 4}}
    for name in INITS.names():
        w = INITS.get(name)(**needs_args.get(name, {}))(KEY, (3, 3, 4, 6), jnp.float32)
        assert w.shape == (3, 3, 4, 6) and w.dtype == jnp.float32, name
        assert np.all(np.isfinite(np.asarray(w))), name
