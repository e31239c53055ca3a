"""gnj.perf: the XLA defaults are merged correctly, take effect, and leave training unchanged.

Also checks the weight-gradient formulations tried in ``bench/wgrad.py`` (documented in
docs/performance.md) against ``jax.vjp`` of the plain convolution in float64. No timings here.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj import perf
from tests.conftest import run_python

YNN = "xla_cpu_experimental_ynn_fusion_type"


def test_merged_flags_add_defaults_and_user_flags_win():
    assert perf.merged_xla_flags("", {YNN: ""}) == f"--{YNN}="
    user = "--xla_force_host_platform_device_count=8"
    assert perf.merged_xla_flags(user, {YNN: ""}) == f"{user} --{YNN}="
    mine = f"--{YNN}=convolution"
    assert perf.merged_xla_flags(mine, {YNN: ""}) == mine  # the user's value is kept


def test_apply_respects_the_off_switch_and_sets_xla_flags():
    env = {"XLA_FLAGS": "--a=1"}
    assert perf.apply(env) is True
    assert env["XLA_FLAGS"].split() == ["--a=1", *(f"--{k}={v}" for k, v in
                                                   perf.XLA_FLAG_DEFAULTS.items())]
    off = {"XLA_FLAGS": "--a=1", perf.DISABLE_ENV: "0"}
    assert perf.apply(off) is False and off["XLA_FLAGS"] == "--a=1"


_APPLY_CHILD = """
import os
from gnj import perf
perf.apply()
import jax, jax.numpy as jnp
conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
x, k = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
jax.jit(lambda x: jax.vjp(lambda k: conv(x, k), k)[1](conv(x, k))[0])(x).block_until_ready()
print(os.environ["XLA_FLAGS"])
"""


def test_defaults_reach_xla_before_the_backend_starts_and_xla_accepts_them(monkeypatch):
    """XLA aborts the process on a flag it does not know or a value it cannot parse (as for
    ``--xla_cpu_experimental_ynn_fusion_type=convolution``), so a child that applies the
    defaults, then compiles and runs a conv and its weight gradient, shows they were read."""
    monkeypatch.setenv(perf.DISABLE_ENV, "1")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    flags = run_python(_APPLY_CHILD, timeout=1800).stdout.split()
    for name, value in perf.XLA_FLAG_DEFAULTS.items():
        assert f"--{name}={value}" in flags


_WGRAD_SHAPES = [(2, 5, 6, 3, 4), (4, 4, 4, 2, 3)]


@pytest.mark.parametrize("shape", _WGRAD_SHAPES)
def test_weight_gradient_formulations_match_jax_grad_float64(shape):
    from bench.wgrad import variants

    n, h, w, c, o = shape
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(n, h, w, c)))
        dy = jnp.asarray(rng.normal(size=(n, h, w, o)))
        k = jnp.asarray(rng.normal(size=(3, 3, c, o)))
        conv = lambda k: jax.lax.conv_general_dilated(
            x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
        expected = jax.grad(lambda k: jnp.sum(conv(k) * dy))(k)
        # NumPy re-derivation: dW[a, b, i, j] = Σ_{n,h,w} xpad[n, h+a, w+b, i]·dy[n, h, w, j]
        xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
        direct = np.stack([np.stack([np.einsum("nhwi,nhwj->ij", xp[:, a:a + h, b:b + w],
                                               np.asarray(dy)) for b in range(3)])
                           for a in range(3)])
        np.testing.assert_allclose(expected, direct, rtol=1e-12, atol=1e-12)
        for name, fn in variants(n, h, w, c, o).items():
            if name == "fwd":
                continue
            if name == "chunked" and n % 8:
                fn = lambda x, dy, fn=fn: fn(x, dy, g=n)
            np.testing.assert_allclose(jax.jit(fn)(x, dy), direct, rtol=1e-12, atol=1e-12,
                                       err_msg=name)


_CURVE_CHILD = """
import json, sys
from gnj import perf
perf.apply()
from configs import default
from gnj import sharding, train
c = default.get_config()
c.dataset.data_dir = sys.argv[1]
c.num_steps = 10
exp = train.build_experiment(c)
state, out = exp.state, []
for _, b in zip(range(c.num_steps), exp.source.train_batches(0)):
    state, m = exp.train_step(state, sharding.global_batch(b, exp.mesh))
    out.append([float(m["train/loss"]), float(m["train/grad_norm"])])
print(json.dumps(out))
"""


@pytest.mark.slow
def test_loss_curve_is_unchanged_by_the_xla_defaults(monkeypatch, tfds_dir):
    """Default config, 10 steps, with and without gnj's XLA defaults: the same curve.

    Only the summation order inside the convolutions differs, so the curves agree to float32
    rounding amplified by training (measured: ≤ 3e-7 relative over the first 5 steps, ≤ 3e-4
    by step 10 — training amplifies rounding chaotically; a bf16 or algorithmic change would
    differ by > 1e-3 from the first step).
    """
    curves = {}
    for mode in ("1", "0"):
        monkeypatch.setenv(perf.DISABLE_ENV, mode)
        out = run_python(["-c", _CURVE_CHILD, tfds_dir], timeout=1800).stdout
        curves[mode] = np.array(json.loads(out.strip().splitlines()[-1]))
    assert curves["1"].shape == (10, 2)
    np.testing.assert_allclose(curves["1"][:5], curves["0"][:5], rtol=1e-5)
    np.testing.assert_allclose(curves["1"], curves["0"], rtol=2e-3)


def test_allocator_env_preloads_the_first_jemalloc_found(tmp_path):
    lib = tmp_path / "libjemalloc.so.2"
    lib.write_bytes(b"")
    paths = (str(tmp_path / "missing.so"), str(lib))
    env = perf.allocator_env({}, paths)
    assert env == {"LD_PRELOAD": str(lib), "MALLOC_CONF": perf.JEMALLOC_CONF}
    assert perf.allocator_env({"MALLOC_CONF": "narenas:2"}, paths)["MALLOC_CONF"] == "narenas:2"


def test_allocator_env_is_empty_when_opted_out_preloaded_or_missing(tmp_path):
    lib = tmp_path / "libjemalloc.so.2"
    lib.write_bytes(b"")
    assert perf.allocator_env({perf.ALLOCATOR_ENV: "system"}, (str(lib),)) == {}
    assert perf.allocator_env({"LD_PRELOAD": "/x/libtcmalloc.so"}, (str(lib),)) == {}
    assert perf.allocator_env({}, (str(tmp_path / "missing.so"),)) == {}
