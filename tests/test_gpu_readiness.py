"""GPU readiness without a GPU: the CPU-only pieces step aside when JAX will run on an
accelerator (the backend query is monkeypatched), the ``gpu`` extra installs JAX's CUDA plugin
matching the pinned JAX and keeps TensorFlow CPU-only, and the GPU bench cases skip cleanly."""

import re
import sys
import types

import jax
import jax.numpy as jnp
import pytest

from gnj import perf
from gnj.proj.online_norm import kernel as online_norm_kernel
from gnj.proj.online_norm import layer as online_norm
from tests.conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def test_xla_cpu_flags_and_jemalloc_only_when_jax_will_use_the_cpu(monkeypatch, tmp_path):
    lib = tmp_path / "libjemalloc.so.2"
    lib.write_text("")
    monkeypatch.setattr(perf, "accelerator_plugins", lambda: ["xla_cuda12"])
    env = {"XLA_FLAGS": "--a=1"}
    assert perf.apply(env) is False and env == {"XLA_FLAGS": "--a=1"}
    assert perf.allocator_env({}, (str(lib),)) == {}
    # JAX_PLATFORMS decides when set: cpu forced on a GPU machine gets the CPU defaults
    forced = {"JAX_PLATFORMS": "cpu"}
    assert perf.apply(forced) is True and "xla_cpu" in forced["XLA_FLAGS"]
    assert perf.allocator_env({"JAX_PLATFORMS": "cpu"}, (str(lib),))["LD_PRELOAD"] == str(lib)
    monkeypatch.setattr(perf, "accelerator_plugins", lambda: [])
    assert perf.expects_cpu_backend({}) is True
    assert perf.expects_cpu_backend({"JAX_PLATFORMS": "cuda,cpu"}) is False
    assert perf.apply({"JAX_PLATFORMS": "tpu"}) is False


def test_online_norm_takes_the_xla_path_off_cpu(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert online_norm.resolve_impl(jnp.float32) == "xla"
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    on_kernel = online_norm_kernel.available() and jax.device_count() == 1
    assert online_norm.resolve_impl(jnp.float32) == ("kernel" if on_kernel else "xla")


def test_gpu_extra_pins_jax_cuda_plugin_and_keeps_tensorflow_cpu():
    with open(f"{REPO}/pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    gpu = project["optional-dependencies"]["gpu"]
    jax_pin = next(d for d in project["dependencies"] if re.match(r"jax[<>=]", d))
    assert any(d == "jax[cuda12]" + jax_pin[len("jax"):] for d in gpu), (gpu, jax_pin)
    assert any(d.startswith("tensorflow-cpu") for d in project["dependencies"])
    assert not any(d.startswith("tensorflow") for d in gpu)


def test_gpu_bench_cases_skip_cleanly_without_a_gpu():
    if jax.default_backend() == "gpu":
        pytest.skip("a GPU is present: the case runs in `make bench`")
    from bench.common import Table
    from bench.scale import case_gpu

    table = Table(matmul_gflops=1.0)
    case_gpu(table, types.SimpleNamespace(quick=True, repeats=1))
    (row,) = table.rows
    assert row.case == "gpu" and "no GPU" in row.skipped and "[gpu]" in row.skipped
