"""Weight-reparametrised convs against NumPy re-derivations of the references, in float64.

The NumPy side works in PyTorch's layout (input NCHW, kernel OIHW, per-filter statistics over
(in, kh, kw)) with a direct convolution written here (explicit padding, stride, groups), from
the definitions in docs/references.md (#weight-centring, #scaled-ws-weight-norm). Compared to
1e-10 relative: the output and the gradients with respect to the input, the raw kernel, the gain
g and the bias (``jax.vjp`` with a random cotangent against complex-step derivatives of the
NumPy forward).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnj.nn  # noqa: F401  (registers the layers)
from gnj.models import common
from gnj.nn.conv import torch_padding
from gnj.registry import CONVS

RTOL = 1e-10


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# ------------------------------------------------------------------------------------------------
# NumPy references (complex-safe)


def np_conv2d(x, w, b, stride, pad, groups):
    """PyTorch's conv2d: x (N, C, H, W), w (O, C/groups, kh, kw), symmetric zero padding."""
    n, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, o, ho, wo), dtype=np.result_type(x, w))
    og = o // groups
    for g in range(groups):
        xs, ws = xp[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    return out if b is None else out + b[None, :, None, None]


def per_filter(w):
    """Axes of one filter in the (O, ...) layout and its fan-in."""
    axes = tuple(range(1, w.ndim))
    return axes, int(np.prod(w.shape[1:]))


def ref_centered(w, p):
    axes, _ = per_filter(w)
    return w - w.mean(axes, keepdims=True)


def ref_normed(w, p):  # GNEDNN WnConv2d: (W − mean)·√(2/n)/std, torch.std unbiased
    axes, n = per_filter(w)
    c = w - w.mean(axes, keepdims=True)
    std = np.sqrt((c**2).sum(axes, keepdims=True) / (n - 1))
    return c * np.sqrt(2.0 / n) / std


def ref_sws(eps=1e-5):  # NF ScaledStdConv2d via Beyond-BatchNorm
    def f(w, p):
        axes, n = per_filter(w)
        c = w - w.mean(axes, keepdims=True)
        sigma = np.sqrt((c**2).mean(axes, keepdims=True))
        g = p["g"].reshape((-1,) + (1,) * (w.ndim - 1))
        return math.sqrt(2 * math.pi / (math.pi - 1)) * g * (c / (sigma + eps)) / math.sqrt(n)
    return f


def ref_weight_norm(eps):  # g·W/(‖W‖ + eps) per filter
    def f(w, p):
        axes, _ = per_filter(w)
        g = p["g"].reshape((-1,) + (1,) * (w.ndim - 1))
        return g * w / (np.sqrt((w**2).sum(axes, keepdims=True)) + eps)
    return f


def ref_plain(w, p):
    return w


def np_forward(reparam, x, params, stride, pad, groups):
    """NHWC / HWIO in, NHWC out, through the PyTorch-layout reference."""
    b = params.get("bias")
    k = params["kernel"]
    if k.ndim == 2:  # dense: kernel (in, out) → (out, in)
        w = reparam(k.T, params)
        return x @ w.T + (0 if b is None else b)
    w = reparam(k.transpose(3, 2, 0, 1), params)
    y = np_conv2d(x.transpose(0, 3, 1, 2), w, b, stride, pad, groups)
    return y.transpose(0, 2, 3, 1)


# ------------------------------------------------------------------------------------------------
# Cases


@dataclasses.dataclass(frozen=True)
class Case:
    spec: str
    ref: Callable
    kernel: int | None = 3  # None: dense layer (kernel_size=())
    stride: int = 1
    groups: int = 1
    bias: bool = True

    def __str__(self) -> str:
        return f"{self.spec}-k{self.kernel}-s{self.stride}-g{self.groups}-b{int(self.bias)}"

    def module(self, **kw):
        if self.kernel is None:
            return CONVS.lookup(self.spec)(features=6, kernel_size=(), use_bias=self.bias,
                                           param_dtype=jnp.float64, **kw)
        return CONVS.lookup(self.spec)(
            features=6, kernel_size=(self.kernel, self.kernel), strides=(self.stride,) * 2,
            padding=torch_padding(self.kernel), use_bias=self.bias,
            feature_group_count=self.groups, param_dtype=jnp.float64, **kw)


CASES = [
    Case("plain", ref_plain),
    Case("centered", ref_centered, stride=2, bias=False),
    Case("centered", ref_centered, kernel=None),
    Case("normed", ref_normed, groups=2),
    Case("wn_chen", ref_normed, kernel=1, stride=2, bias=False),
    Case("normed", ref_normed, kernel=None),
    Case("sws", ref_sws(), stride=2),
    Case("sws", ref_sws(), groups=2, bias=False),
    Case("sws", ref_sws(), kernel=None),
    Case("weight_norm", ref_weight_norm(1e-5), groups=2),
    Case("weight_norm", ref_weight_norm(1e-5), kernel=None),
    Case("weight_norm_torch", ref_weight_norm(0.0), stride=2),
    Case("weight_norm(variant='torch')", ref_weight_norm(0.0), kernel=None, bias=False),
]


def complex_step_grads(fn, arrays, cot, h=1e-30):
    """∂⟨cot, fn(arrays)⟩/∂arrays[k] for every entry of the dict ``arrays``, by complex steps."""
    grads = {}
    for k, v in arrays.items():
        out = np.zeros(v.shape)
        for i in range(v.size):
            z = v.astype(complex)
            z.flat[i] += 1j * h
            out.flat[i] = np.sum(cot * fn({**arrays, k: z}).imag) / h
        grads[k] = out
    return grads


def assert_close(actual, expected, rtol=RTOL):
    expected = np.asarray(expected).real
    atol = rtol * max(float(np.max(np.abs(expected))), 1e-300)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=atol)


def random_params(params, rng):
    draw = {"kernel": lambda s: rng.normal(0.1, 0.5, s), "bias": lambda s: rng.normal(0, 0.5, s),
            "g": lambda s: rng.uniform(0.5, 1.5, s)}
    return {k: draw[k](v.shape) for k, v in params.items()}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_conv_matches_numpy_reference(case):
    rng = np.random.default_rng(0)
    x = rng.normal(0.2, 1.0, (2, 5, 5, 4) if case.kernel else (3, 4))
    module = case.module()
    variables = module.init(jax.random.key(0), jnp.asarray(x))
    params = random_params(variables["params"], rng)
    assert ("bias" in params) == case.bias
    y = module.apply({"params": params}, jnp.asarray(x))
    pad = (case.kernel or 1) // 2

    def ref(arrays):
        pp = {k: v for k, v in arrays.items() if k != "x"}
        return np_forward(case.ref, arrays["x"], pp, case.stride, pad, case.groups)

    assert y.dtype == jnp.float64
    assert_close(y, ref({"x": x, **params}))
    cot = rng.normal(size=y.shape)
    _, vjp = jax.vjp(lambda xx, pp: module.apply({"params": pp}, xx), jnp.asarray(x),
                     jax.tree.map(jnp.asarray, params))
    gx, gp = vjp(jnp.asarray(cot))
    expected = complex_step_grads(ref, {"x": x, **params}, cot)
    assert_close(gx, expected.pop("x"))
    for k, v in expected.items():
        assert_close(gp[k], v)


# ------------------------------------------------------------------------------------------------
# Initial gains


def test_weight_norm_torch_starts_at_the_raw_kernel():
    """nn.utils.weight_norm: g = ‖W‖ at init, so the initial effective kernel is the raw one."""
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 5, 4)))
    module = Case("weight_norm_torch", ref_weight_norm(0.0)).module()
    variables = module.init(jax.random.key(0), x)
    k = np.asarray(variables["params"]["kernel"])
    np.testing.assert_allclose(variables["params"]["g"], np.sqrt((k**2).sum((0, 1, 2))),
                               rtol=1e-14)
    assert_close(module.apply(variables, x),
                 np_forward(ref_plain, np.asarray(x), to_np(variables["params"]), 1, 1, 1))


@pytest.mark.parametrize("spec", ["weight_norm", "sws"])
def test_gain_initialised_to_one(spec):
    module = Case(spec, ref_plain).module()
    variables = module.init(jax.random.key(0), jnp.ones((1, 5, 5, 4)))
    np.testing.assert_array_equal(variables["params"]["g"], np.ones(6))


def test_normed_effective_filters_have_zero_mean_and_variance_two_over_fan_in():
    """Chen's configuration: each effective filter has mean 0 and unbiased variance 2/n, so a
    conv on a one-hot input reads the effective kernel back."""
    module = CONVS.lookup("normed")(features=3, kernel_size=(3, 3), padding="VALID",
                                    use_bias=False, param_dtype=jnp.float64)
    x = np.zeros((2 * 9, 3, 3, 2))  # one-hot inputs read out every kernel entry
    x.reshape(18, 18)[np.arange(18), np.arange(18)] = 1.0
    variables = module.init(jax.random.key(0), jnp.asarray(x))
    w = np.asarray(module.apply(variables, jnp.asarray(x))).reshape(18, 3)  # (fan-in, filters)
    np.testing.assert_allclose(w.mean(0), 0.0, atol=1e-15)
    np.testing.assert_allclose(w.var(0, ddof=1), 2.0 / 18, rtol=1e-12)


def to_np(tree):
    return jax.tree.map(np.asarray, tree)


# ------------------------------------------------------------------------------------------------
# Invariances of the reparametrisations to per-filter changes of the raw kernel


@pytest.mark.parametrize("spec,kw,scale,shift", [
    ("centered", {}, False, True),
    ("normed", {}, True, True),
    ("sws", {"epsilon": 0.0}, True, True),
    ("weight_norm", {"epsilon": 0.0}, True, False),
    ("weight_norm_torch", {}, True, False),
])
def test_reparam_invariant_to_per_filter_kernel_change(spec, kw, scale, shift):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 5, 5, 4)))
    module = Case(spec, ref_plain, groups=2).module(**kw)
    variables = module.init(jax.random.key(0), x)
    params = random_params(variables["params"], rng)
    a = rng.uniform(0.1, 10.0, 6) if scale else 1.0
    b = rng.normal(0.0, 2.0, 6) if shift else 0.0
    moved = {**params, "kernel": a * params["kernel"] + b}
    y = module.apply({"params": params}, x)
    assert_close(module.apply({"params": moved}, x), y, rtol=1e-12)
    # the change is not a no-op: the plain conv sees it
    plain = Case("plain", ref_plain, groups=2).module()
    pk = {k: params[k] for k in ("kernel", "bias")}
    with pytest.raises(AssertionError):
        assert_close(plain.apply({"params": {**pk, "kernel": moved["kernel"]}}, x),
                     plain.apply({"params": pk}, x))


def test_model_plumbing_builds_a_torch_padded_strided_reparam_conv():
    """gnj.models.common.conv → a registered reparam conv with PyTorch padding and bias init."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 5, 5, 4)).astype(np.float32)
    module = common.conv("sws", 6, 3, 2, use_bias=True, name="c")
    variables = module.init(jax.random.key(0), jnp.asarray(x))
    assert set(variables["params"]) == {"kernel", "bias", "g"}
    y = module.apply(variables, jnp.asarray(x))
    assert y.shape == (2, 3, 3, 6) and y.dtype == jnp.float32
    expected = np_forward(ref_sws(), x.astype(np.float64), to_np(variables["params"]), 2, 1, 1)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Bad input


class _Named(nn.Module):
    spec: str
    kw: tuple = ()

    @nn.compact
    def __call__(self, x):
        return CONVS.lookup(self.spec)(name="conv1", **dict(self.kw))(x)


@pytest.mark.parametrize("spec,kw,shape,pattern", [
    ("sws", dict(features=6, kernel_size=(3, 3), feature_group_count=3), (1, 5, 5, 4),
     r"ScaledStdConv 'conv1'.*feature_group_count=3.*4 input channels.*6 output"),
    ("weight_norm", dict(features=6, kernel_size=(3, 3), variant="pytorch"), (1, 5, 5, 4),
     r"WeightNormConv 'conv1'.*'pytorch'.*unit"),
    ("centered", dict(features=6, kernel_size=(3, 3), padding="CIRCULAR"), (1, 5, 5, 4),
     r"CenteredConv 'conv1'.*padding 'CIRCULAR'"),
    ("normed", dict(features=6, kernel_size=(3, 3)), (5, 4),
     r"NormedConv 'conv1'.*needs input with 4 axes.*\(5, 4\)"),
    ("normed", dict(features=6, kernel_size=(3, 3), padding=((1, 1),)), (1, 5, 5, 4),
     r"NormedConv 'conv1'.*1 entries for 2 spatial axes"),
    ("centered", dict(features=6, kernel_size=(), feature_group_count=2), (5, 4),
     r"CenteredConv 'conv1'.*dense layer.*feature_group_count=2"),
])
def test_bad_input_raises_at_init(spec, kw, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        _Named(spec, tuple(kw.items())).init(jax.random.key(0), jnp.ones(shape))


# ----------------------------------------------------------------- the small-map reroute


@pytest.mark.parametrize("hw,k,stride,pad", [((2, 2), 3, 1, 1), ((5, 4), 7, 2, 3),
                                             ((1, 3), 3, 1, 1), ((2, 2), 3, 2, 1)])
def test_small_map_conv_equals_lax_conv_and_its_gradients_float64(hw, k, stride, pad):
    """Maps smaller than the kernel go through the im2col matmul: same values and gradients."""
    from gnj.nn.conv import conv_general_dilated

    dn = ("NHWC", "HWIO", "NHWC")
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(size=(3, *hw, 4)))
        w = jnp.asarray(rng.normal(size=(k, k, 4, 5)))
        args = ((stride, stride), ((pad, pad), (pad, pad)))
        ours = lambda x, w: conv_general_dilated(x, w, *args, dimension_numbers=dn)
        ref = lambda x, w: jax.lax.conv_general_dilated(x, w, *args, dimension_numbers=dn)
        assert "conv_general_dilated" not in str(jax.make_jaxpr(ours)(x, w))  # rerouted
        np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-12, atol=1e-12)
        g = jnp.asarray(rng.normal(size=ref(x, w).shape))
        for a, b in zip(jax.vjp(ours, x, w)[1](g), jax.vjp(ref, x, w)[1](g)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_large_maps_keep_lax_conv_and_the_flax_conv_uses_the_dispatch():
    from gnj.nn.conv import Conv, conv_general_dilated

    x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    jaxpr = str(jax.make_jaxpr(lambda x, w: conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))(x, w))
    assert "conv_general_dilated" in jaxpr
    conv = Conv(features=4, kernel_size=(3, 3), padding=((1, 1), (1, 1)))
    tiny = jnp.ones((2, 2, 2, 3))
    v = conv.init(jax.random.PRNGKey(0), tiny)
    assert "conv_general_dilated" not in str(jax.make_jaxpr(conv.apply)(v, tiny))
    kernel = v["params"]["kernel"]
    ref = jax.lax.conv_general_dilated(tiny.astype(kernel.dtype), kernel, (1, 1), ((1, 1), (1, 1)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(conv.apply(v, tiny), ref + v["params"]["bias"], rtol=1e-5,
                               atol=1e-5)
