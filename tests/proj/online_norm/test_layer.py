"""OnlineNorm against a NumPy per-sample re-derivation of the reference algorithm
(docs/proj/online_norm.md#algorithm), looping over samples.

The NumPy class below is written from the formulas (forward streams μ, σ²; the control process
with u, v; layer scaling's backward (g − mean(g·out)·out)/scale and the clamp's zero gradient
written out by hand, not autodiffed), one sample at a time, in float64. The JAX layer is run the
way the generic train step runs it: ``batch_stats`` from the mutable output, ``backward_state``
from the cotangent.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.proj.online_norm.layer import OnlineNorm, linear_recurrence, resolve_impl, use_impl
from gnj.registry import NORMS
from gnj.state import BACKWARD_STATE
from tests.conftest import run_python


class NumpyOnlineNorm:
    """The reference algorithm, one sample at a time, forward and backward, in float64."""

    def __init__(self, c, af, ab, eps=1e-5, ecm="ls", ls_eps=1e-5, clamp=5.0):
        self.af, self.ab, self.eps, self.ecm = af, ab, eps, ecm
        self.ls_eps, self.clamp = ls_eps, clamp
        self.mu, self.var = np.zeros(c), np.ones(c)
        self.u, self.v = np.zeros(c), np.zeros(c)

    def step(self, x, gamma, beta, g_out):
        """One training batch: returns out, dx, dgamma, dbeta and updates all four streams."""
        n, c = x.shape[0], x.shape[-1]
        xs = x.reshape(n, -1, c)
        ys, ss = np.zeros_like(xs), np.zeros((n, c))
        for t in range(n):  # forward, sample by sample, using the previous statistics
            s = np.sqrt(self.var + self.eps)
            ys[t] = (xs[t] - self.mu) / s
            ss[t] = s
            mx, vx = xs[t].mean(0), xs[t].var(0)
            d = mx - self.mu
            self.var = self.af * self.var + (1 - self.af) * vx + self.af * (1 - self.af) * d * d
            self.mu = self.mu + (1 - self.af) * d
        z = ys * gamma + beta
        g_out = g_out.reshape(n, -1, c)
        if self.ecm == "ls":
            scale = np.sqrt((z ** 2).mean(axis=(1, 2), keepdims=True) + self.ls_eps)
            out = z / scale
            g_z = (g_out - (g_out * out).mean(axis=(1, 2), keepdims=True) * out) / scale
        elif self.ecm == "ac":
            out = np.clip(z, -self.clamp, self.clamp)
            g_z = g_out * (np.abs(z) < self.clamp)
        else:
            out, g_z = z, g_out
        dgamma, dbeta = (g_z * ys).sum((0, 1)), g_z.sum((0, 1))
        g = g_z * gamma
        dx = np.zeros_like(xs)
        for t in range(n):  # the control process, in the same order
            gt = g[t] - (1 - self.ab) * self.v * ys[t]
            self.v = self.v + (gt * ys[t]).mean(0)
            gh = gt / ss[t]
            xp = gh - (1 - self.ab) * self.u
            self.u = self.u + xp.mean(0)
            dx[t] = xp
        return out.reshape(x.shape), dx.reshape(x.shape), dgamma, dbeta

    def eval(self, x, gamma, beta):
        z = (x - self.mu) / np.sqrt(self.var + self.eps) * gamma + beta
        if self.ecm == "ls":
            axes = tuple(range(1, x.ndim))
            return z / np.sqrt((z ** 2).mean(axis=axes, keepdims=True) + self.ls_eps)
        return np.clip(z, -self.clamp, self.clamp) if self.ecm == "ac" else z


def _train_batch(layer, variables, x, g_out):
    """One step as the generic train step does it: batch_stats from the mutable output,
    backward_state from the cotangent; plus the input and parameter gradients."""
    params, stats, bwd = variables["params"], variables["batch_stats"], variables[BACKWARD_STATE]

    def f(params, bwd, x):
        out, new = layer.apply({"params": params, "batch_stats": stats, BACKWARD_STATE: bwd},
                               x, train=True, mutable=["batch_stats"])
        return jnp.sum(out * g_out), (out, new)

    (_, (out, new)), (dparams, new_bwd, dx) = jax.value_and_grad(
        f, (0, 1, 2), has_aux=True)(params, bwd, x)
    variables = {"params": params, "batch_stats": new["batch_stats"], BACKWARD_STATE: new_bwd}
    return out, dx, dparams, variables


# c8, c16: one 64-byte cache line of channels in float64 / float32 (the CPU kernel's register
# path; the other precision takes its general path), 35 pixels = two full tiles of 16 and a
# partial one.
SHAPES = {"dense": (6, 5), "conv": (5, 3, 2, 4), "c8": (3, 5, 7, 8), "c16": (3, 5, 7, 16)}
IMPLS = ["xla", "kernel"]


def slow_case(test: str, params: dict) -> bool:
    """``make test`` keeps each (shape kind, ecm) pair of the per-sample comparison once, the
    implementation and precision rotating over the pairs (12 of 48 cases; every value of every
    parameter stays covered), and one stream-split shape per implementation."""
    if test == "test_matches_per_sample_reference_over_three_batches":
        pairs = [(k, e) for k in SHAPES for e in ("ls", "ac", "none")]
        i = pairs.index((params["kind"], params["ecm"]))
        combos = [(m, p) for m in IMPLS for p in ("float64", "float32")]
        return (params["impl"], params["precision"]) != combos[i % len(combos)]
    if test == "test_streams_split_the_batch_into_independent_chunks":
        return (params["impl"] == "xla") != (params["shape"] == (6, 2, 2, 3))
    return False


@pytest.fixture(params=IMPLS)
def impl(request):
    """Run the test with the training core on the XLA path and on the CPU kernel (forced, so
    a kernel that does not build fails the test rather than falling back)."""
    with use_impl(request.param):
        yield request.param


def test_impl_fixture_takes_both_paths(impl):
    assert resolve_impl(jnp.float32) == impl


@pytest.mark.parametrize("ecm", ["ls", "ac", "none"])
@pytest.mark.parametrize("kind", list(SHAPES))
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_matches_per_sample_reference_over_three_batches(kind, ecm, precision, impl):
    af, ab = 0.75, 0.6  # strong decays so every stream moves visibly within a batch
    dtype = jnp.float64 if precision == "float64" else jnp.float32
    rtol = 1e-10 if precision == "float64" else 1e-5
    rng = np.random.default_rng(0)
    shape = SHAPES[kind]
    ref = NumpyOnlineNorm(shape[-1], af, ab, ecm=ecm, clamp=1.2)
    with jax.enable_x64(precision == "float64"):
        layer = OnlineNorm(decay_forward=af, decay_backward=ab, ecm=ecm, clamp_value=1.2,
                           param_dtype=dtype)
        variables = layer.init(jax.random.PRNGKey(0), jnp.zeros(shape, dtype))
        gamma = rng.uniform(0.5, 1.5, shape[-1])
        beta = rng.normal(size=shape[-1]) * 0.1
        variables["params"] = {"scale": jnp.asarray(gamma, dtype),
                               "bias": jnp.asarray(beta, dtype)}
        for _ in range(3):
            x = rng.normal(size=shape) * 2 + 1
            g = rng.normal(size=shape)
            out, dx, dparams, variables = _train_batch(
                layer, variables, jnp.asarray(x, dtype), jnp.asarray(g, dtype))
            r_out, r_dx, r_dg, r_db = ref.step(x, gamma, beta, g)
            tol = dict(rtol=rtol, atol=rtol)
            np.testing.assert_allclose(out, r_out, **tol)
            np.testing.assert_allclose(dx, r_dx, **tol)
            np.testing.assert_allclose(dparams["scale"], r_dg, **tol)
            np.testing.assert_allclose(dparams["bias"], r_db, **tol)
            np.testing.assert_allclose(variables["batch_stats"]["mean"], ref.mu, **tol)
            np.testing.assert_allclose(variables["batch_stats"]["var"], ref.var, **tol)
            np.testing.assert_allclose(variables[BACKWARD_STATE]["u"], ref.u, **tol)
            np.testing.assert_allclose(variables[BACKWARD_STATE]["v"], ref.v, **tol)
        x = rng.normal(size=shape)
        before = jax.tree.map(np.asarray, variables)
        y, mutated = layer.apply(variables, jnp.asarray(x, dtype), train=False,
                                 mutable=["batch_stats", BACKWARD_STATE])
        np.testing.assert_allclose(y, ref.eval(x, gamma, beta), rtol=rtol, atol=rtol)
        for col in ("batch_stats", BACKWARD_STATE):  # eval updates nothing
            for a, b in zip(jax.tree.leaves(before[col]), jax.tree.leaves(mutated[col])):
                np.testing.assert_array_equal(a, b)


def test_batch_size_one_is_the_papers_scalar_recurrence(impl):
    ref = NumpyOnlineNorm(3, 0.9, 0.8, ecm="none")
    with jax.enable_x64(True):
        layer = OnlineNorm(decay_forward=0.9, decay_backward=0.8, ecm="none",
                           param_dtype=jnp.float64)
        variables = layer.init(jax.random.PRNGKey(0), jnp.zeros((1, 3), jnp.float64))
        rng = np.random.default_rng(1)
        for step in range(4):
            x, g = rng.normal(size=(1, 3)), rng.normal(size=(1, 3))
            out, dx, _, variables = _train_batch(layer, variables, jnp.asarray(x), jnp.asarray(g))
            if step == 0:  # closed form from the initial streams μ = 0, σ² = 1, u = v = 0
                np.testing.assert_allclose(out, x / np.sqrt(1 + 1e-5), rtol=1e-12)
                np.testing.assert_allclose(dx, g / np.sqrt(1 + 1e-5), rtol=1e-12)
                np.testing.assert_allclose(variables["batch_stats"]["mean"], 0.1 * x[0],
                                           rtol=1e-12)
                np.testing.assert_allclose(variables["batch_stats"]["var"],
                                           0.9 + 0.09 * x[0] ** 2, rtol=1e-12)
            r_out, r_dx, _, _ = ref.step(x, np.ones(3), np.zeros(3), g)
            np.testing.assert_allclose(out, r_out, rtol=1e-12)
            np.testing.assert_allclose(dx, r_dx, rtol=1e-12)
        np.testing.assert_allclose(variables[BACKWARD_STATE]["u"], ref.u, rtol=1e-12)
        np.testing.assert_allclose(variables[BACKWARD_STATE]["v"], ref.v, rtol=1e-12)


@pytest.mark.parametrize("shape", [(6, 2, 2, 3), (6, 3, 7, 16)])
def test_streams_split_the_batch_into_independent_chunks(impl, shape):
    """streams=2: each half is the per-sample algorithm from the shared state; the carried
    streams are the average of the halves' final streams; γ, β gradients add."""
    af, ab, c = 0.7, 0.5, shape[-1]
    rng = np.random.default_rng(2)
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.normal(size=c) * 0.1
    with jax.enable_x64(True):
        layer = OnlineNorm(decay_forward=af, decay_backward=ab, streams=2,
                           param_dtype=jnp.float64)
        variables = layer.init(jax.random.PRNGKey(0), jnp.zeros(shape, jnp.float64))
        variables["params"] = {"scale": jnp.asarray(gamma), "bias": jnp.asarray(beta)}
        state = (np.zeros(c), np.ones(c), np.zeros(c), np.zeros(c))
        for _ in range(2):
            x, g = rng.normal(size=shape) + 0.5, rng.normal(size=shape)
            out, dx, dparams, variables = _train_batch(layer, variables, jnp.asarray(x),
                                                       jnp.asarray(g))
            halves, finals = [], []
            for sl in (slice(0, 3), slice(3, 6)):
                ref = NumpyOnlineNorm(c, af, ab)
                ref.mu, ref.var, ref.u, ref.v = (a.copy() for a in state)
                halves.append(ref.step(x[sl], gamma, beta, g[sl]))
                finals.append((ref.mu, ref.var, ref.u, ref.v))
            state = tuple((a + b) / 2 for a, b in zip(*finals))
            np.testing.assert_allclose(out, np.concatenate([h[0] for h in halves]), rtol=1e-10)
            np.testing.assert_allclose(dx, np.concatenate([h[1] for h in halves]), rtol=1e-10)
            np.testing.assert_allclose(dparams["scale"], halves[0][2] + halves[1][2], rtol=1e-10)
            np.testing.assert_allclose(dparams["bias"], halves[0][3] + halves[1][3], rtol=1e-10)
            got = (variables["batch_stats"]["mean"], variables["batch_stats"]["var"],
                   variables[BACKWARD_STATE]["u"], variables[BACKWARD_STATE]["v"])
            for a, b in zip(got, state):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 13])
def test_linear_recurrence_matches_loop(n):
    rng = np.random.default_rng(n)
    b, h0 = rng.normal(size=(2, n, 3)), rng.normal(size=3)
    a = rng.uniform(-1.2, 1.2, size=(2, n, 3))
    for decay in (0.7, a):  # a constant (the μ, σ², u streams) and a varying decay (v)
        with jax.enable_x64(True):
            got = linear_recurrence(decay, jnp.asarray(b), jnp.asarray(h0), axis=1)
        h, expected = np.broadcast_to(h0, (2, 3)), []
        for t in range(n):
            h = (decay if isinstance(decay, float) else decay[:, t]) * h + b[:, t]
            expected.append(h)
        np.testing.assert_allclose(got, np.stack(expected, axis=1), rtol=1e-12, atol=1e-14)


def test_presets():
    assert OnlineNorm(preset="cifar10").decays() == (1023 / 1024, 127 / 128)
    assert OnlineNorm(preset="cifar100").decays() == (511 / 512, 15 / 16)
    assert OnlineNorm(preset="imagenet").decays() == (0.999, 0.99)
    assert OnlineNorm().decays() == (0.999, 0.99)
    assert OnlineNorm(preset="cifar10", decay_backward=0.5).decays() == (1023 / 1024, 0.5)
    assert NORMS.lookup("online(preset='cifar100')")().decays() == (511 / 512, 15 / 16)


@pytest.mark.parametrize("kwargs, shape, train, msg", [
    (dict(decay_forward=1.0), (2, 3), False, "decay_forward=1.0 must be in"),
    (dict(decay_forward=-0.5), (2, 3), False, "decay_forward=-0.5 must be in"),
    (dict(decay_backward=0.0), (2, 3), False, "decay_backward=0.0 must be in"),
    (dict(preset="cifar10", decay_backward=1.5), (2, 3), False, "decay_backward=1.5"),
    (dict(ecm="bn"), (2, 3), False, "unknown ecm 'bn'; valid: ls, ac, none"),
    (dict(ecm="ac", clamp_value=0.0), (2, 3), False, "clamp_value=0.0 must be > 0"),
    (dict(ecm="ac", clamp_value=-1), (2, 3), False, "clamp_value=-1 must be > 0"),
    (dict(preset="mnist"), (2, 3), False, "unknown preset 'mnist'"),
    (dict(streams=0), (2, 3), False, "streams=0 must be a positive int"),
    (dict(streams="gpu"), (2, 3), False, "streams='gpu' must be"),
    (dict(streams=4), (6, 3), True, "streams=4 does not divide the training batch of 6"),
    (dict(), (2, 3, 3), False, r"input of shape \(2, 3, 3\)"),
])
def test_bad_input_raises_at_init(kwargs, shape, train, msg):
    with pytest.raises(ValueError, match=f"OnlineNorm.*{msg}"):
        OnlineNorm(**kwargs).init(jax.random.PRNGKey(0), jnp.zeros(shape), train=train)


_SHARDED = r"""
import re, sys, jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from gnj import sharding
from gnj.proj.online_norm.layer import OnlineNorm
from gnj.state import BACKWARD_STATE
mesh = sharding.make_mesh()
rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(16, 4, 4, 3)).astype(np.float32))
g = jnp.asarray(rng.normal(size=(16, 4, 4, 3)).astype(np.float32))
batch = NamedSharding(mesh, P("data"))
x, g = jax.device_put(x, batch), jax.device_put(g, batch)
results, collectives = {}, {}
for streams in (1, 8):
    layer = OnlineNorm(decay_forward=0.8, decay_backward=0.7, ecm="ls", streams=streams)
    v = layer.init(jax.random.PRNGKey(0), x[:1])
    v["params"] = {"scale": jnp.array([0.5, 1.0, 2.0]), "bias": jnp.array([0.1, 0.0, -0.1])}
    def step(v, x, g):
        def f(params, bwd, x):
            out, new = layer.apply({**v, "params": params, BACKWARD_STATE: bwd}, x, train=True,
                                   mutable=["batch_stats"])
            return jnp.sum(out * g), (out, new)
        (_, (out, new)), grads = jax.value_and_grad(f, (0, 1, 2), has_aux=True)(
            v["params"], v[BACKWARD_STATE], x)
        return out, grads, new["batch_stats"]
    compiled = jax.jit(step).lower(v, x, g).compile()
    for _ in range(2):  # two consecutive batches, the state carried as the train step does
        out, (dparams, bwd, dx), stats = compiled(v, x, g)
        v = {"params": v["params"], "batch_stats": stats, BACKWARD_STATE: bwd}
        results[f"{streams}"] = [np.asarray(a) for a in jax.tree.leaves((out, dx, dparams, v))]
    collectives[streams] = sorted(set(re.findall(
        r"(all-gather|all-to-all|collective-permute|reduce-scatter)", compiled.as_text())))
np.savez(sys.argv[1], *results["1"], *results["8"])
print("COLLECTIVES", collectives[1], collectives[8])
"""


def test_streams_are_identical_on_one_and_eight_devices(tmp_path):
    """Global stream (streams=1) and 8 streams: outputs, input and γ/β gradients and the new
    μ, σ², u, v after two batches are the same on 1 and on 8 devices; on 8 devices the 8
    streams run on their own shards (no collective moves activations between devices)."""
    runs = []
    for n in (1, 8):
        path = str(tmp_path / f"on{n}.npz")
        proc = run_python(["-c", _SHARDED, path], devices=n)
        data = np.load(path)
        runs.append([data[f"arr_{i}"] for i in range(len(data.files))])
    assert len(runs[0]) == 2 * 10  # per streams: out, dx, dβ, dγ, u, v, μ, σ², β, γ
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    half = len(runs[1]) // 2
    assert not all(np.allclose(a, b) for a, b in zip(runs[1][:half], runs[1][half:]))
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("COLLECTIVES"))
    assert line.endswith("[]"), line  # streams=8 on 8 devices: no all-gather / permute


def test_float64_input_is_computed_in_float64_with_float32_parameters(impl):
    """param_dtype float32 (the default) must not round a float64 input: output, input gradient
    and γ/β gradients to 1e-10 of the float64 per-sample reference (float32 gives ~1e-7)."""
    shape, af, ab = SHAPES["conv"], 0.75, 0.6
    rng = np.random.default_rng(4)
    gamma = rng.uniform(0.5, 1.5, shape[-1]).astype(np.float32).astype(np.float64)
    beta = (rng.normal(size=shape[-1]) * 0.1).astype(np.float32).astype(np.float64)
    ref = NumpyOnlineNorm(shape[-1], af, ab)
    with jax.enable_x64(True):
        layer = OnlineNorm(decay_forward=af, decay_backward=ab)  # param_dtype float32
        variables = layer.init(jax.random.PRNGKey(0), jnp.zeros(shape, jnp.float64))
        variables["params"] = {"scale": jnp.asarray(gamma, jnp.float32),
                               "bias": jnp.asarray(beta, jnp.float32)}
        x, g = rng.normal(size=shape) * 2 + 1, rng.normal(size=shape)
        out, dx, dparams, new = _train_batch(layer, variables, jnp.asarray(x), jnp.asarray(g))
        r_out, r_dx, _, _ = ref.step(x, gamma, beta, g)
        assert out.dtype == dx.dtype == jnp.float64
        assert new["batch_stats"]["mean"].dtype == new[BACKWARD_STATE]["u"].dtype == jnp.float32
        np.testing.assert_allclose(out, r_out, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(dx, r_dx, rtol=1e-10, atol=1e-10)
        y = layer.apply(new, jnp.asarray(x), train=False)
        assert y.dtype == jnp.float64
