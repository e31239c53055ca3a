"""OnlineNorm against a NumPy per-sample re-derivation of REFERENCE.md §5.2 (loops over samples)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.nn.online_norm import OnlineNorm, linear_recurrence
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
    backward_state from the cotangent, params gradient."""
    params, stats, bwd = variables["params"], variables["batch_stats"], variables[BACKWARD_STATE]

    def f(params, bwd):
        out, new = layer.apply({"params": params, "batch_stats": stats, BACKWARD_STATE: bwd},
                               x, train=True, mutable=["batch_stats"])
        return jnp.sum(out * g_out), (out, new)

    (_, (out, new)), (dparams, new_bwd) = jax.value_and_grad(f, (0, 1), has_aux=True)(params, bwd)
    dx = jax.grad(lambda x_: jnp.sum(layer.apply(
        {"params": params, "batch_stats": stats, BACKWARD_STATE: bwd}, x_, train=True,
        mutable=["batch_stats"])[0] * g_out))(x)
    variables = {"params": params, "batch_stats": new["batch_stats"], BACKWARD_STATE: new_bwd}
    return out, dx, dparams, variables


SHAPES = {"dense": (6, 5), "conv": (5, 3, 2, 4)}


@pytest.mark.parametrize("ecm", ["ls", "ac", "none"])
@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_matches_per_sample_reference_over_three_batches(kind, ecm, precision):
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


def test_batch_size_one_is_the_papers_scalar_recurrence():
    ref = NumpyOnlineNorm(3, 0.9, 0.8, ecm="none")
    with jax.enable_x64(True):
        layer = OnlineNorm(decay_forward=0.9, decay_backward=0.8, ecm="none",
                           param_dtype=jnp.float64)
        variables = layer.init(jax.random.PRNGKey(0), jnp.zeros((1, 3), jnp.float64))
        rng = np.random.default_rng(1)
        for _ in range(4):
            x, g = rng.normal(size=(1, 3)), rng.normal(size=(1, 3))
            out, dx, _, variables = _train_batch(layer, variables, jnp.asarray(x), jnp.asarray(g))
            r_out, r_dx, _, _ = ref.step(x, np.ones(3), np.zeros(3), g)
            np.testing.assert_allclose(out, r_out, rtol=1e-12)
            np.testing.assert_allclose(dx, r_dx, rtol=1e-12)


def test_linear_recurrence_matches_loop():
    rng = np.random.default_rng(0)
    a, b, h0 = rng.normal(size=(9, 2)), rng.normal(size=(9, 2)), rng.normal(size=2)
    with jax.enable_x64(True):
        got = linear_recurrence(jnp.asarray(a), jnp.asarray(b), jnp.asarray(h0))
    h, expected = h0, []
    for t in range(9):
        h = a[t] * h + b[t]
        expected.append(h)
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-12)


def test_presets_and_bad_input():
    assert OnlineNorm(preset="cifar10").decays() == (1023 / 1024, 127 / 128)
    assert OnlineNorm(preset="cifar100").decays() == (511 / 512, 15 / 16)
    assert OnlineNorm().decays() == (0.999, 0.99)
    x = jnp.zeros((2, 3))
    for kwargs, msg in [(dict(decay_forward=1.0), "decay_forward=1.0 must be in"),
                        (dict(decay_backward=0.0), "decay_backward=0.0 must be in"),
                        (dict(ecm="bn"), "unknown ecm 'bn'"),
                        (dict(ecm="ac", clamp_value=0.0), "clamp_value=0.0"),
                        (dict(preset="mnist"), "unknown preset 'mnist'")]:
        with pytest.raises(ValueError, match=msg):
            OnlineNorm(**kwargs).init(jax.random.PRNGKey(0), x)


_SHARDED = r"""
import sys, jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from gnj import sharding
from gnj.nn.online_norm import OnlineNorm
from gnj.state import BACKWARD_STATE
mesh = sharding.make_mesh()
layer = OnlineNorm(decay_forward=0.8, decay_backward=0.7)
rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(16, 4, 4, 3)).astype(np.float32))
g = jnp.asarray(rng.normal(size=(16, 4, 4, 3)).astype(np.float32))
v = layer.init(jax.random.PRNGKey(0), x)
def step(v, x):
    def f(bwd, x):
        out, new = layer.apply({**v, BACKWARD_STATE: bwd}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(out * g), (out, new)
    (_, (out, new)), (bwd, dx) = jax.value_and_grad(f, (0, 1), has_aux=True)(v[BACKWARD_STATE], x)
    return out, dx, new["batch_stats"], bwd
x = jax.device_put(x, NamedSharding(mesh, P("data")))
out = jax.jit(step)(v, x)
np.savez(sys.argv[1], *[np.asarray(a) for a in jax.tree.leaves(out)])
"""


def test_global_stream_is_identical_on_one_and_eight_devices(tmp_path):
    results = []
    for n in (1, 8):
        path = str(tmp_path / f"on{n}.npz")
        run_python(["-c", _SHARDED, path], devices=n)
        results.append(np.load(path))
    assert len(results[0].files) == 6
    for k in results[0].files:
        np.testing.assert_allclose(results[0][k], results[1][k], rtol=1e-5, atol=1e-6)
