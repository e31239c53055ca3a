"""The Online Normalization CPU kernel (gnj/proj/online_norm/online_norm_cpu.cc): same numbers
as the XLA path (itself checked against a per-sample NumPy loop in test_layer.py, for both
paths), which path is taken when, the build cache, and the fallback when the kernel
cannot be built."""

import os
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.proj.online_norm import kernel
from gnj.proj.online_norm import layer as on
from tests.conftest import run_python

AF, AB, EPS = 0.8, 0.7, 1e-5


def _inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    x = rng.normal(size=shape) * 2 + 1
    g = rng.normal(size=shape)
    state = (rng.normal(size=c), rng.uniform(0.5, 2.0, c), rng.normal(size=c) * 0.3,
             rng.normal(size=c) * 0.3)
    return [jnp.asarray(a, dtype) for a in (x, g, *state)]


def _both_directions(fwd, bwd, x, g, mu0, var0, u0, v0, k):
    y, stats, mu, var = fwd(x, mu0, var0, AF, EPS, k)
    dx, u, v = bwd(g, y, stats, u0, v0, AB, k)
    return {"y": y, "s": stats[0], "mean_y": stats[1], "mean_y2": stats[2], "mu": mu,
            "var": var, "dx": dx, "u": u, "v": v}


#: ``make test`` runs each (shape, streams) case in one precision: the float32 line layout in
#: float32, the float64 one in float64 (``make test-all`` runs both precisions of every case).
FAST_PRECISION = {((12, 40, 16), 1): "float32", ((12, 40, 16), 3): "float64",
                  ((12, 40, 16), 12): "float32", ((1, 33, 5), 1): "float64",
                  ((9, 1, 7), 1): "float32", ((6, 100, 1), 2): "float64",
                  ((4, 50, 40), 2): "float32", ((4, 17, 24), 1): "float64"}


def slow_case(test: str, params: dict) -> bool:
    if test == "test_kernel_matches_xla_path":
        return FAST_PRECISION[(params["shape"], params["k"])] != params["precision"]
    return False


@pytest.mark.parametrize("shape, k", [
    ((12, 40, 16), 1), ((12, 40, 16), 3), ((12, 40, 16), 12),  # streams=k; one sample each
    ((1, 33, 5), 1),     # N = 1
    ((9, 1, 7), 1),      # D = 1 (dense)
    ((6, 100, 1), 2),    # one channel
    ((4, 50, 40), 2),    # two float32 lines and a remainder
    ((4, 17, 24), 1),    # three float64 lines
])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_kernel_matches_xla_path(shape, k, precision):
    dtype = jnp.float64 if precision == "float64" else jnp.float32
    tol = 1e-10 if precision == "float64" else 1e-5
    with jax.enable_x64(precision == "float64"):
        args = _inputs(shape, dtype)
        want = _both_directions(on._forward_streams, on._control_process, *args, k)
        got = _both_directions(kernel.forward, kernel.backward, *args, k)
        for name in want:
            assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape
            np.testing.assert_allclose(got[name], want[name], rtol=tol, atol=tol, err_msg=name)


def _train_step_hlo(shape=(4, 3, 3, 16)):
    layer = on.OnlineNorm(ecm="none")
    x = jnp.ones(shape)
    v = layer.init(jax.random.PRNGKey(0), x)

    def f(params, bwd, x):
        out, _ = layer.apply({**v, "params": params, "backward_state": bwd}, x, train=True,
                             mutable=["batch_stats"])
        return jnp.sum(out)

    return jax.jit(jax.grad(f, (0, 1, 2))).lower(v["params"], v["backward_state"], x).as_text()


@pytest.mark.parametrize("impl, used", [("auto", True), ("kernel", True), ("xla", False)])
def test_which_path_is_traced(impl, used):
    with on.use_impl(impl):
        text = _train_step_hlo()
    for name in ("gnj_online_norm_fwd_f32", "gnj_online_norm_bwd_f32"):
        assert (name in text) == used


def test_env_chooses_the_path_and_bad_names_raise(monkeypatch):
    monkeypatch.setenv(on.IMPL_ENV, "xla")
    assert on.resolve_impl(jnp.float32) == "xla"
    with on.use_impl("kernel"):  # the context manager wins over the environment
        assert on.resolve_impl(jnp.float32) == "kernel"
    monkeypatch.setenv(on.IMPL_ENV, "fast")
    with pytest.raises(ValueError, match="'fast'.*valid: auto, xla, kernel"):
        on.resolve_impl(jnp.float32)
    with pytest.raises(ValueError, match="valid: auto, xla, kernel"):
        with on.use_impl("gpu"):
            pass
    monkeypatch.setenv(on.IMPL_ENV, "auto")
    assert on.resolve_impl(jnp.bfloat16) == "xla"  # dtypes the kernel lacks stay on XLA
    with on.use_impl("kernel"), pytest.raises(ValueError, match="not bfloat16"):
        on.resolve_impl(jnp.bfloat16)


def test_several_devices_keep_the_xla_path():
    proc = run_python(["-c", "import jax.numpy as jnp; "
                       "from gnj.proj.online_norm import layer as on; "
                       "print('IMPL', on.resolve_impl(jnp.float32))"], devices=2)
    assert "IMPL xla" in proc.stdout


def test_build_is_cached_under_a_key(tmp_path, monkeypatch):
    monkeypatch.setenv(kernel.cpp_build.CACHE_ENV, str(tmp_path))
    path = kernel.build()
    assert path.parent == tmp_path and path.name.startswith("online_norm_cpu-")
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temporary file left behind
    mtime = path.stat().st_mtime_ns
    assert kernel.build() == path and path.stat().st_mtime_ns == mtime  # reused, not rebuilt
    monkeypatch.setattr(kernel, "FLAGS", (*kernel.FLAGS, "-DGNJ_TEST_FLAG"))
    assert kernel.library_path() != path  # the flags are part of the key


@pytest.mark.parametrize("cxx, says", [("/nonexistent/g++", "No such file"),
                                       (shutil.which("false") or "/bin/false", "exited 1")])
def test_build_failure_warns_once_and_falls_back(tmp_path, monkeypatch, cxx, says):
    shape = (5, 3, 2, 4)
    rng = np.random.default_rng(4)
    x, g = (jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in "xg")
    layer = on.OnlineNorm(decay_forward=AF, decay_backward=AB)
    v = layer.init(jax.random.PRNGKey(0), x)

    def step(v, x, g):
        def f(params, bwd, x):
            out, new = layer.apply({**v, "params": params, "backward_state": bwd}, x,
                                   train=True, mutable=["batch_stats"])
            return jnp.sum(out * g), (out, new)
        return jax.grad(f, (0, 1, 2), has_aux=True)(v["params"], v["backward_state"], x)

    with on.use_impl("xla"):
        want = step(v, x, g)
    monkeypatch.setenv(kernel.cpp_build.CXX_ENV, cxx)
    monkeypatch.setenv(kernel.cpp_build.CACHE_ENV, str(tmp_path))
    kernel._load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match=f"could not be built(.|\n)*{cxx}(.|\n)*{says}"):
            assert on.resolve_impl(jnp.float32) == "xla"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # auto: the XLA path, without a second warning
            got = step(v, x, g)
        with pytest.raises(RuntimeError, match="could not be built"):
            with on.use_impl("kernel"):
                on.resolve_impl(jnp.float32)
    finally:
        kernel._load.cache_clear()  # the next test builds (or finds) the real library
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b)

