"""Every norm against a NumPy re-derivation of its reference definition, in float64.

The NumPy references below are written from docs/references.md (#moment-norms,
#group-frn-evonorm, #running-stats) in the
references' own NCHW layout (the gnj modules are NHWC). For each norm the test compares, to
1e-10 relative: the train-mode output, the updated running statistics, the eval-mode output,
and the gradients with respect to the input and every parameter (``jax.vjp`` with a random
cotangent against a complex-step derivative of the NumPy forward, exact to rounding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnj.nn  # noqa: F401  (registers the layers)
from gnj.nn.norms import (
    EvoNormS0,
    GhostBatchNorm,
    GroupNorm,
    batch_norm_train,
    channel_sum,
    needs_batch_stats,
    p_grouping,
)
from gnj.registry import NORMS

RTOL = 1e-10
EPS = 1e-5


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# ------------------------------------------------------------------------------------------------
# NumPy references (NCHW; complex-safe so that complex-step differentiation works)


def nchw(x):
    return x[:, :, None, None] if x.ndim == 2 else x.transpose(0, 3, 1, 2)


def nhwc(t, ndim):
    return t[:, :, 0, 0] if ndim == 2 else t.transpose(0, 2, 3, 1)


def ch(v):
    """A per-channel vector as (1, C, 1, 1)."""
    return np.asarray(v)[None, :, None, None]


def mean_var(t, axes, ddof=0):
    """Mean and variance (ddof 0: biased, 1: unbiased, torch.var's default) without np.var."""
    mu = t.mean(axes, keepdims=True)
    n = np.prod([t.shape[a] for a in axes])
    return mu, ((t - mu) ** 2).sum(axes, keepdims=True) / (n - ddof)


def cmax(a, b):
    """max for complex-step arrays: chosen by the real part."""
    a, b = np.broadcast_arrays(a, b)
    return np.where(a.real >= b.real, a, b)


def affine(t, p):
    return t * ch(p["scale"]) + ch(p["bias"])


def ref_batch(biased: bool):
    def f(x, p, s, train):
        t = nchw(x)
        if train:
            mu, var = mean_var(t, (0, 2, 3))
            mu, var = mu.ravel(), var.ravel()
            n = t.shape[0] * t.shape[2] * t.shape[3]
            run_var = var if biased else var * n / (n - 1)
            s = {"mean": 0.9 * s["mean"] + 0.1 * mu, "var": 0.9 * s["var"] + 0.1 * run_var}
        else:
            mu, var = s["mean"], s["var"]
        return nhwc(affine((t - ch(mu)) / np.sqrt(ch(var) + EPS), p), x.ndim), s
    return f


def ref_ghost(size: int):
    def f(x, p, s, train):
        t = nchw(x)
        if not train:
            return nhwc(affine((t - ch(s["mean"])) / np.sqrt(ch(s["var"]) + EPS), p), x.ndim), s
        outs, means, vars_ = [], [], []
        for i in range(0, t.shape[0], size):
            chunk = t[i:i + size]
            mu, var = mean_var(chunk, (0, 2, 3))
            outs.append((chunk - mu) / np.sqrt(var + EPS))
            n = chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
            means.append(mu.ravel())
            vars_.append(var.ravel() * n / (n - 1))
        s = {"mean": 0.9 * s["mean"] + 0.1 * np.mean(means, 0),
             "var": 0.9 * s["var"] + 0.1 * np.mean(vars_, 0)}
        return nhwc(affine(np.concatenate(outs), p), x.ndim), s
    return f


def ref_mean_only(x, p, s, train):
    t = nchw(x)
    if train:
        mu = t.mean((0, 2, 3))
        s = {"mean": 0.9 * s["mean"] + 0.1 * mu}
    else:
        mu = s["mean"]
    return nhwc(t - ch(mu) + ch(p["bias"]), x.ndim), s


def ref_moment(order: int):
    def f(x, p, s, train):
        t = nchw(x)
        if train:
            if order == 2:
                sm = np.sqrt((t * t).mean((0, 2, 3)))
            else:  # |t| written analytically for the complex step
                sm = (t * np.sign(t.real)).mean((0, 2, 3))
            s = {"moment": 0.9 * s["moment"] + 0.1 * sm}
        else:
            sm = s["moment"]
        return nhwc(t * ch(p["scale"]) / (ch(sm) + EPS) + ch(p["bias"]), x.ndim), s
    return f


def ref_variance(x, p, s, train):
    t = nchw(x)
    if train:
        _, var = mean_var(t, (0, 2, 3))
        var = var.ravel()
        s = {"var": 0.9 * s["var"] + 0.1 * var}
    else:
        var = s["var"]
    return nhwc(affine(t / np.sqrt(ch(var) + EPS), p), x.ndim), s


def ref_layer(element: bool):
    def f(x, p, s, train):
        t = nchw(x)
        mu, var = mean_var(t, (1, 2, 3))
        y = (t - mu) / np.sqrt(var + EPS)
        if element:  # (H, W, C) parameters as (1, C, H, W)
            g, b = (nchw(np.asarray(p[k])[None]) for k in ("scale", "bias"))
            return nhwc(y * g + b, x.ndim), s
        return nhwc(affine(y, p), x.ndim), s
    return f


def ref_instance(x, p, s, train):
    t = nchw(x)
    mu, var = mean_var(t, (2, 3))
    return nhwc(affine((t - mu) / np.sqrt(var + EPS), p), x.ndim), s


def group_stats(t, groups, ddof):
    """PyTorch-style: view (N, G, C/G·H·W), statistics over the last axis, broadcast back."""
    n, c = t.shape[:2]
    tg = t.reshape(n, groups, -1)
    mu, var = mean_var(tg, (2,), ddof)
    return (np.broadcast_to(mu, tg.shape).reshape(t.shape),
            np.broadcast_to(var, tg.shape).reshape(t.shape))


def ref_group(groups: int, ddof: int):
    def f(x, p, s, train):
        t = nchw(x)
        mu, var = group_stats(t, groups, ddof)
        return nhwc(affine((t - mu) / np.sqrt(var + EPS), p), x.ndim), s
    return f


def ref_frn(tlu: bool):
    def f(x, p, s, train):
        t = nchw(x)
        nu2 = (t * t).mean((2, 3), keepdims=True)
        eps = np.asarray(p["eps"])  # one scalar per layer (reference), or per channel (option)
        eps = ch(eps) if eps.ndim else eps
        y = affine(t / np.sqrt(nu2 + eps * np.sign(eps.real)), p)  # |eps|, complex-step safe
        if tlu:
            y = cmax(y, ch(p["tau"]))
        return nhwc(y, x.ndim), s
    return f


def ref_evonorm_s0(groups: int, ddof: int):
    def f(x, p, s, train):
        t = nchw(x)
        _, var = group_stats(t, groups, ddof)
        sig = 1.0 / (1.0 + np.exp(-ch(p["v"]) * t))
        return nhwc(affine(t * sig / np.sqrt(var + EPS), p), x.ndim), s
    return f


def ref_evonorm_b0(x, p, s, train):
    t = nchw(x)
    if train:
        _, var = mean_var(t, (0, 2, 3))
        var = var.ravel()
        s = {"var": 0.9 * s["var"] + 0.1 * var}
    else:
        var = s["var"]
    _, inst_var = mean_var(t, (2, 3), ddof=1)
    den = cmax(np.sqrt(ch(var) + EPS), ch(p["v"]) * t + np.sqrt(inst_var + EPS))
    return nhwc(affine(t / den, p), x.ndim), s


def ref_none(x, p, s, train):
    return x, s


# ------------------------------------------------------------------------------------------------
# Cases


@dataclasses.dataclass(frozen=True)
class Case:
    spec: str
    ref: Callable
    init_stats: dict[str, float]  # the running statistics' constant initial values
    shape: tuple[int, ...] = (4, 3, 3, 8)

    def __str__(self) -> str:
        return f"{self.spec}{self.shape}"


CASES = [
    Case("none", ref_none, {}),
    Case("batch", ref_batch(False), {"mean": 0.0, "var": 1.0}),
    Case("batch", ref_batch(False), {"mean": 0.0, "var": 1.0}, (6, 5)),
    Case("batch_lubana", ref_batch(True), {"mean": 1.0, "var": 1.0}),
    Case("batch(convention='biased')", ref_batch(True), {"mean": 1.0, "var": 1.0}, (6, 5)),
    Case("ghost_batch(size=2)", ref_ghost(2), {"mean": 0.0, "var": 1.0}),
    Case("ghost_batch(size=3)", ref_ghost(3), {"mean": 0.0, "var": 1.0}, (6, 5)),
    Case("mean_only", ref_mean_only, {"mean": 0.0}),
    Case("smn", ref_moment(2), {"moment": 1.0}),
    Case("l2n", ref_moment(2), {"moment": 1.0}, (6, 5)),
    Case("l1n", ref_moment(1), {"moment": 1.0}),
    Case("variance", ref_variance, {"var": 1.0}),
    Case("layer", ref_layer(False), {}),
    Case("layer", ref_layer(False), {}, (3, 6)),
    Case("layer(affine='element')", ref_layer(True), {}),
    Case("instance", ref_instance, {}),
    Case("group(groups=4)", ref_group(4, 0), {}),
    Case("group(groups=2)", ref_group(2, 0), {}, (3, 6)),
    Case("group(p=0.25, unbiased=True)", ref_group(2, 1), {}),  # ceil(8·0.25) = 2 groups
    Case("group(p=4, unbiased=True)", ref_group(4, 1), {}),
    Case("frn", ref_frn(True), {}),
    Case("frn(tlu=False)", ref_frn(False), {}),
    Case("frn", ref_frn(True), {}, (3, 6)),
    Case("frn(per_channel_eps=True)", ref_frn(True), {}),
    Case("evonorm_s0(groups=4)", ref_evonorm_s0(4, 1), {}),
    Case("evonorm_s0(groups=2, unbiased=False)", ref_evonorm_s0(2, 0), {}),
    Case("evonorm_b0", ref_evonorm_b0, {"var": 1.0}),
]


def random_params(params, rng):
    """Non-default parameter values, so that a wrong use of any of them shows."""
    draw = {
        "scale": lambda s: rng.uniform(0.5, 1.5, s),
        "bias": lambda s: rng.normal(0.0, 0.5, s),
        "eps": lambda s: rng.choice([-1.0, 1.0], s) * rng.uniform(0.05, 0.2, s),
        "tau": lambda s: rng.normal(0.0, 0.3, s),
        "v": lambda s: rng.uniform(0.5, 1.5, s),
    }
    return {k: jnp.asarray(draw[k](v.shape)) for k, v in params.items()}


def to_np(tree):
    return jax.tree.map(np.asarray, tree)


def complex_step_grads(fn, x, params, cot, h=1e-30):
    """∂⟨cot, fn(x, params)⟩ / ∂(x, params) by complex steps, one input element at a time."""

    def grad_of(arr, call):
        out = np.zeros(arr.shape)
        for i in range(arr.size):
            z = arr.astype(complex)
            z.flat[i] += 1j * h
            out.flat[i] = np.sum(cot * call(z).imag) / h
        return out

    gx = grad_of(x, lambda z: fn(z, params))
    gp = {k: grad_of(v, lambda z, k=k: fn(x, {**params, k: z})) for k, v in params.items()}
    return gx, gp


def assert_close(actual, expected, rtol=RTOL):
    expected = np.asarray(expected)
    atol = rtol * max(float(np.max(np.abs(expected), initial=0.0)), 1e-300)
    np.testing.assert_allclose(np.asarray(actual), expected.real, rtol=rtol, atol=atol)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_norm_matches_numpy_reference(case):
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1.5, case.shape)
    x_eval = rng.normal(-0.2, 1.2, case.shape)
    module = NORMS.lookup(case.spec)(param_dtype=jnp.float64) if case.spec != "none" else (
        NORMS.lookup(case.spec)())
    variables = module.init(jax.random.key(0), jnp.asarray(x), train=False)
    stats = variables.get("batch_stats", {})
    assert set(stats) == set(case.init_stats)
    for k, v in case.init_stats.items():
        np.testing.assert_array_equal(stats[k], np.full(case.shape[-1], v))
    params = random_params(variables.get("params", {}), rng)
    p_np, s_np = to_np(params), to_np(stats)

    for train, xin in ((True, x), (False, x_eval)):
        def apply(xx, pp, train=train, stats=stats):
            return module.apply({"params": pp, "batch_stats": stats}, xx, train=train,
                                mutable=["batch_stats"])

        y, new_vars = apply(jnp.asarray(xin), params)
        y_ref, s_ref = case.ref(xin, p_np, s_np, train)
        assert y.dtype == jnp.float64
        assert_close(y, y_ref)
        new_stats = new_vars.get("batch_stats", {})
        assert set(new_stats) == set(s_ref)
        for k in s_ref:
            assert_close(new_stats[k], s_ref[k])

        cot = rng.normal(size=y.shape)
        _, vjp = jax.vjp(lambda xx, pp, apply=apply: apply(xx, pp)[0], jnp.asarray(xin), params)
        gx, gp = vjp(jnp.asarray(cot))
        gx_ref, gp_ref = complex_step_grads(
            lambda xx, pp, train=train, s=s_np: case.ref(xx, pp, s, train)[0], xin, p_np, cot)
        assert_close(gx, gx_ref)
        for k in gp_ref:
            assert_close(gp[k], gp_ref[k])
        if train:  # eval runs on the freshly updated running statistics
            stats, s_np = new_stats, to_np(new_stats)


def test_smn_gradient_matches_the_fused_kernels_closed_form():
    """A hand-written SMN backward (docs/references.md#moment-norms), per channel with s = sm + eps:
    grad_sm = −(Σ g·x)·scale/(2·s·sm), dx = g·scale + (2x/P)·grad_sm, scale = γ/s."""
    rng = np.random.default_rng(1)
    x = rng.normal(0.2, 1.3, (4, 3, 3, 5))
    gamma = rng.uniform(0.5, 1.5, 5)
    module = NORMS.lookup("smn")(param_dtype=jnp.float64)
    variables = module.init(jax.random.key(0), jnp.asarray(x))
    params = {"scale": jnp.asarray(gamma), "bias": variables["params"]["bias"]}
    g = rng.normal(size=x.shape)
    _, vjp = jax.vjp(lambda xx: module.apply({**variables, "params": params}, xx, train=True,
                                             mutable=["batch_stats"])[0], jnp.asarray(x))
    (dx,) = vjp(jnp.asarray(g))
    p = x.size // 5
    sm = np.sqrt(np.mean(x**2, (0, 1, 2)))
    s = sm + EPS
    scale = gamma / s
    grad_sm = -np.sum(g * x, (0, 1, 2)) * scale / (2 * s * sm)
    assert_close(dx, g * scale + (2 * x / p) * grad_sm)


def test_evonorm_s0_default_is_32_groups():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 2, 2, 64))
    module = NORMS.lookup("evonorm_s0")(param_dtype=jnp.float64)
    variables = module.init(jax.random.key(0), jnp.asarray(x))
    y = module.apply(variables, jnp.asarray(x))
    p = to_np(variables["params"])
    assert_close(y, ref_evonorm_s0(32, 1)(x, p, {}, True)[0])
    with pytest.raises(AssertionError):  # 16 groups differ: the test can see the group count
        assert_close(y, ref_evonorm_s0(16, 1)(x, p, {}, True)[0])


def test_group_default_is_32_groups():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 2, 2, 64))
    module = NORMS.lookup("group")(param_dtype=jnp.float64)
    variables = module.init(jax.random.key(0), jnp.asarray(x))
    y = module.apply(variables, jnp.asarray(x))
    assert_close(y, ref_group(32, 0)(x, to_np(variables["params"]), {}, True)[0])


@pytest.mark.parametrize("width,p,groups", [
    (64, 32, 32), (64, 8, 8), (64, 1.5, 1), (64, 1, 64), (64, 0.5, 32), (64, 0.125, 8),
    (64, 0.03125, 2), (64, 1e-7, 1), (48, 0.25, 12),
])
def test_p_grouping_rule(width, p, groups):
    assert p_grouping(width, p) == groups


# ------------------------------------------------------------------------------------------------
# Running statistics are left alone outside training


@pytest.mark.parametrize("spec", ["batch", "batch_lubana", "ghost_batch(size=2)", "mean_only",
                                  "smn", "l1n", "variance", "evonorm_b0"])
def test_running_stats_untouched_at_init_and_in_eval(spec):
    x = jnp.asarray(np.random.default_rng(4).normal(1.0, 2.0, (4, 2, 2, 3)))
    module = NORMS.lookup(spec)(param_dtype=jnp.float64)
    init_train = module.init(jax.random.key(0), x, train=True)
    init_eval = module.init(jax.random.key(0), x, train=False)
    jax.tree.map(np.testing.assert_array_equal, init_train, init_eval)
    _, after_eval = module.apply(init_eval, x, train=False, mutable=["batch_stats"])
    jax.tree.map(np.testing.assert_array_equal, after_eval["batch_stats"],
                 init_eval["batch_stats"])
    _, after_train = module.apply(init_eval, x, train=True, mutable=["batch_stats"])
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)),
                                           after_train["batch_stats"], init_eval["batch_stats"]))
    assert all(changed)


def test_needs_batch_stats_flags():
    coupled = {"batch", "bn", "batch_lubana", "ghost_batch", "mean_only", "smn", "l2n", "l1n",
               "variance", "evonorm_b0"}
    independent = {"none", "layer", "instance", "group", "gn", "frn", "frn_tlu", "evonorm_s0"}
    for name in coupled:
        assert needs_batch_stats(name), name
    for name in independent:
        assert not needs_batch_stats(name), name
    for name in NORMS.names():
        assert isinstance(NORMS.get(name).needs_batch_stats, bool), name


def test_float32_input_gives_float32_output():
    x = jnp.ones((4, 2, 2, 8), jnp.float32) * jnp.arange(8.0, dtype=jnp.float32)
    for name in NORMS.names():
        factory = NORMS.get(name)
        spec = (f"{name}(size=2)" if factory is GhostBatchNorm else
                f"{name}(groups=4)" if factory in (GroupNorm, EvoNormS0) else name)
        module = NORMS.lookup(spec)()
        variables = module.init(jax.random.key(0), x)
        y, _ = module.apply(variables, x, train=True, mutable=["batch_stats"])
        assert y.dtype == jnp.float32 and y.shape == x.shape, name


# ------------------------------------------------------------------------------------------------
# Invariances (epsilon = 0 so that they are exact)


def _apply_train(spec, x):
    module = NORMS.lookup(spec)(param_dtype=jnp.float64, epsilon=0.0)
    variables = module.init(jax.random.key(0), x)
    params = random_params(variables.get("params", {}), np.random.default_rng(5))
    if "eps" in params:  # FRN's learnable eps: keep its (zero) init for an exact invariance
        params["eps"] = variables["params"]["eps"]
    return module.apply({**variables, "params": params}, x, train=True,
                        mutable=["batch_stats"])[0]


@pytest.mark.parametrize("spec,shift", [
    ("batch", True), ("batch_lubana", True), ("ghost_batch(size=2)", True), ("smn", False),
    ("l1n", False), ("variance", False), ("evonorm_b0", False),
])
def test_batch_norms_invariant_to_per_channel_scale(spec, shift):
    rng = np.random.default_rng(6)
    x = rng.normal(0.5, 1.0, (4, 3, 3, 5))
    a = rng.uniform(0.1, 10.0, 5)
    b = rng.normal(0.0, 3.0, 5) if shift else 0.0
    y = _apply_train(spec, jnp.asarray(x))
    assert_close(_apply_train(spec, jnp.asarray(a * x + b)), y, rtol=1e-12)


def test_variance_norm_is_not_shift_invariant_but_bn_is():
    x = np.random.default_rng(7).normal(0.0, 1.0, (4, 3, 3, 5))
    with pytest.raises(AssertionError):
        assert_close(_apply_train("variance", jnp.asarray(x + 2.0)),
                     _apply_train("variance", jnp.asarray(x)))
    assert_close(_apply_train("batch", jnp.asarray(x + 2.0)),
                 _apply_train("batch", jnp.asarray(x)), rtol=1e-12)


@pytest.mark.parametrize("spec,shift", [
    ("layer", True), ("layer(affine='element')", True), ("instance", True),
    ("group(groups=4)", True), ("group(p=0.5, unbiased=True)", True), ("frn", False),
])
def test_per_sample_norms_invariant_to_per_sample_scale(spec, shift):
    rng = np.random.default_rng(8)
    x = rng.normal(0.5, 1.0, (3, 3, 3, 8))
    a = rng.uniform(0.1, 10.0, (3, 1, 1, 1))
    b = rng.normal(0.0, 3.0, (3, 1, 1, 1)) if shift else 0.0
    y = _apply_train(spec, jnp.asarray(x))
    assert_close(_apply_train(spec, jnp.asarray(a * x + b)), y, rtol=1e-12)
    # ... and the per-sample norms do not mix samples: changing sample 0 leaves the rest alone
    x2 = x.copy()
    x2[0] = rng.normal(size=x2[0].shape)
    assert_close(_apply_train(spec, jnp.asarray(x2))[1:], y[1:], rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# Bad input: ValueError naming the layer, the value and the channel / batch count


class _Named(nn.Module):
    spec: str

    @nn.compact
    def __call__(self, x, train=True):
        return NORMS.lookup(self.spec)(name="norm1")(x, train)


@pytest.mark.parametrize("spec,shape,train,pattern", [
    ("group(groups=3)", (2, 4, 4, 8), False,
     r"GroupNorm 'norm1'.*groups=3 does not divide the 8 channels.*\[1, 2, 4, 8\]"),
    ("group(groups=0)", (2, 4, 4, 8), False, r"GroupNorm 'norm1'.*groups=0.*8 channels"),
    ("group(p=0.0)", (2, 4, 4, 8), False, r"GroupNorm 'norm1'.*p=0.0 must be > 0"),
    ("group(p=-2)", (2, 4, 4, 8), False, r"GroupNorm 'norm1'.*p=-2 must be > 0"),
    ("group(p=0.3)", (2, 4, 4, 8), False,
     r"GroupNorm 'norm1'.*p=0.3 gives 3 groups.*does not divide the 8 channels"),
    ("group(groups=2, p=0.5)", (2, 4, 4, 8), False, r"GroupNorm 'norm1'.*either groups"),
    ("group(groups=8, unbiased=True)", (2, 8), False, r"GroupNorm 'norm1'.*≥ 2 elements"),
    ("evonorm_s0", (2, 4, 4, 8), False,
     r"EvoNormS0 'norm1'.*groups=32 does not divide the 8 channels"),
    ("ghost_batch(size=3)", (4, 2, 2, 8), True,
     r"GhostBatchNorm 'norm1'.*ghost batch size 3 does not divide the batch of 4 samples"),
    ("instance", (4, 8), False, r"InstanceNorm 'norm1'.*spatial axes.*\(4, 8\)"),
    ("evonorm_b0", (4, 1, 1, 8), False, r"EvoNormB0 'norm1'.*at least 2.*\(4, 1, 1, 8\)"),
    ("batch(convention='keras')", (4, 8), False, r"BatchNorm 'norm1'.*'keras'.*biased"),
    ("layer(affine='row')", (4, 8), False, r"LayerNorm 'norm1'.*'row'.*element"),
    ("batch", (8,), False, r"BatchNorm 'norm1'.*no channel axis"),
])
def test_bad_input_raises_at_init(spec, shape, train, pattern):
    with pytest.raises(ValueError, match=pattern):
        _Named(spec).init(jax.random.key(0), jnp.ones(shape), train=train)


def test_ghost_size_is_only_required_to_divide_the_training_batch():
    module = NORMS.lookup("ghost_batch(size=4)")()
    variables = module.init(jax.random.key(0), jnp.ones((3, 2, 2, 2)), train=False)  # eval: ok
    with pytest.raises(ValueError, match="ghost batch size 4 does not divide the batch of 3"):
        module.apply(variables, jnp.ones((3, 2, 2, 2)), train=True, mutable=["batch_stats"])


# ------------------------------------------------------------------------------------------------
# BatchNorm's closed-form custom VJP and its channel sums


@pytest.mark.parametrize("m,c", [(1, 3), (7, 5), (96, 16), (4099, 2), (12, 1000)])
def test_channel_sum_equals_the_plain_sum(m, c):
    """The wide ones·A view (k = the largest divisor of M with k·C ≤ 8192) sums the same."""
    a = np.random.default_rng(m * c).normal(size=(m, c))
    np.testing.assert_allclose(channel_sum(jnp.asarray(a)), a.sum(0), rtol=1e-12, atol=1e-12)


def _plain_bn(x, gamma, beta, eps=EPS):
    mean = jnp.mean(x, 0)
    var = jnp.mean(jnp.square(x - mean), 0)
    return (x - mean) / jnp.sqrt(var + eps) * gamma + beta


@pytest.mark.parametrize("shape", [(6, 4), (5, 3, 2, 4), (128, 4, 4, 16)])
def test_batch_norm_custom_vjp_equals_autodiff_of_the_plain_formula(shape):
    """∂L/∂x, ∂L/∂γ, ∂L/∂β of the closed-form VJP against jax.grad of the textbook formula."""
    rng = np.random.default_rng(3)
    c = shape[-1]
    x = jnp.asarray(rng.normal(0.7, 2.0, shape).reshape(-1, c))
    gamma, beta = jnp.asarray(rng.uniform(0.5, 1.5, c)), jnp.asarray(rng.normal(size=c))
    cot = jnp.asarray(rng.normal(size=x.shape))

    def loss(f):
        return lambda x, g, b: jnp.sum(f(x, g, b) * cot)

    got = jax.grad(loss(lambda x, g, b: batch_norm_train(x, g, b, EPS)[0]), (0, 1, 2))(
        x, gamma, beta)
    want = jax.grad(loss(_plain_bn), (0, 1, 2))(x, gamma, beta)
    for a, b in zip(got, want):
        assert_close(a, b)
    y, mean, var = batch_norm_train(x, gamma, beta, EPS)
    assert_close(y, _plain_bn(x, gamma, beta))
    assert_close(mean, x.mean(0))
    assert_close(var, x.var(0))


def test_batch_norm_module_gradient_without_affine_and_under_vmap():
    """use_scale/use_bias off: the input gradient is the plain formula's; vmap over the VJP."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(3, 8, 2, 2, 5)))
    cot = jnp.asarray(rng.normal(size=x.shape))
    module = NORMS.lookup("batch")(use_scale=False, use_bias=False, param_dtype=jnp.float64)
    variables = module.init(jax.random.key(0), x[0], train=False)

    def f(xi, ci):
        return jnp.sum(module.apply(variables, xi, train=True, mutable=["batch_stats"])[0] * ci)

    got = jax.vmap(jax.grad(f))(x, cot)
    ones, zeros = jnp.ones(5), jnp.zeros(5)
    want = jax.vmap(jax.grad(lambda xi, ci: jnp.sum(
        _plain_bn(xi.reshape(-1, 5), ones, zeros).reshape(xi.shape) * ci)))(x, cot)
    assert_close(got, want)


def test_frn_learns_one_eps_per_layer_like_the_reference():
    from gnj.models import build

    x = jnp.ones((2, 4, 4, 6))
    assert NORMS.lookup("frn")().init(jax.random.PRNGKey(0), x)["params"]["eps"].shape == ()
    per_channel = NORMS.lookup("frn(per_channel_eps=True)")().init(jax.random.PRNGKey(0), x)
    assert per_channel["params"]["eps"].shape == (6,)
    # Beyond-BN VGG cfg_10 with FRN, 100 classes: the reference's module has 9,462,190
    # parameters (one ε per FRN layer; per channel would add Σ (C − 1) = 2,934)
    model = build({"name": "vgg", "cfg": "cfg_10", "norm": "frn", "act": "identity"}, 100)
    v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    assert sum(a.size for a in jax.tree.leaves(v["params"])) == 9_462_190
