"""Build, load and call the Online Normalization CPU kernel (``online_norm_cpu.cc``, XLA FFI).

The C++ source ships with the package and is compiled on first use with :data:`FLAGS` by
:mod:`gnj.nn.cpp_build` (compiler and cache from gnj.settings), keyed by the source, the flags,
the compiler, the JAX version and the CPU model (``-march=native`` code is only reused on the
same CPU). If the build fails, :func:`available` warns once and returns False and the layer
(:mod:`gnj.proj.online_norm.layer`) uses its XLA path.

:func:`forward` and :func:`backward` are one sweep over the samples each way; the formulas are
in the C++ file's header and in the layer's module docstring.
"""

from __future__ import annotations

import ctypes
import functools
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gnj.nn import cpp_build
from gnj.nn.cpp_build import compiler

SOURCE = Path(__file__).with_name("online_norm_cpu.cc")
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=c++17")
#: (direction, dtype) -> (FFI target name, exported handler symbol)
TARGETS = {
    ("fwd", "float32"): ("gnj_online_norm_fwd_f32", "GnjOnlineNormFwdF32"),
    ("fwd", "float64"): ("gnj_online_norm_fwd_f64", "GnjOnlineNormFwdF64"),
    ("bwd", "float32"): ("gnj_online_norm_bwd_f32", "GnjOnlineNormBwdF32"),
    ("bwd", "float64"): ("gnj_online_norm_bwd_f64", "GnjOnlineNormBwdF64"),
}
DTYPES = ("float32", "float64")


def build_command(out: str | Path) -> list[str]:
    """The compiler command that builds the library at ``out``."""
    return [compiler(), *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(out)]


def library_path() -> Path:
    """Where the library for this source, flags, compiler, JAX version and CPU lives."""
    return cpp_build.library_path("online_norm_cpu", (SOURCE.read_bytes(), " ".join(FLAGS),
                                                      cpp_build.cpu_model()))


def build() -> Path:
    """Compile the library unless it is cached; raises ``RuntimeError`` naming the command."""
    return cpp_build.build(library_path(), build_command)


@functools.cache
def _load() -> ctypes.CDLL | None:
    """Build (if needed) and load the library and register its FFI targets; None on failure."""
    try:
        return cpp_build.load(build(), TARGETS.values())
    except (RuntimeError, OSError) as e:
        warnings.warn(f"gnj: the Online Normalization CPU kernel could not be built, so the "
                      f"XLA path is used instead. {e}", RuntimeWarning, stacklevel=3)
        return None


def available() -> bool:
    """Whether the kernel is built and registered (the first call builds it; warns on failure)."""
    return _load() is not None


def supports(dtype) -> bool:
    return jnp.dtype(dtype).name in DTYPES


def _call(direction: str, dtype, out_shapes, *args, **attrs):
    if not available():
        raise RuntimeError("the Online Normalization CPU kernel is not available (see the "
                           "warning above)")
    name = TARGETS[(direction, jnp.dtype(dtype).name)][0]
    out = [jax.ShapeDtypeStruct(s, dtype) for s in out_shapes]
    return jax.ffi.ffi_call(name, out, vmap_method="sequential")(*args, **attrs)


def forward(x: jax.Array, mu0: jax.Array, var0: jax.Array, alpha_f: float, eps: float, k: int):
    """(y, (s, mean_y, mean_y2), μ, σ²) for x of shape (N, D, C) in k streams of N/k samples.

    y_t = (x_t − μ_{t−1})/s_t, s_t = √(σ²_{t−1} + eps); the residuals s_t, mean_D(y_t) and
    mean_D(y_t²) are shaped (k, N/k, C), as the XLA path's; μ, σ² are the streams' final values
    averaged over the k streams.
    """
    n, _, c = x.shape
    y, s, mean_y, mean_y2, mu, var = _call(
        "fwd", x.dtype, [x.shape, (n, c), (n, c), (n, c), (c,), (c,)],
        x, mu0.astype(x.dtype), var0.astype(x.dtype), alpha_f=np.float64(alpha_f),
        eps=np.float64(eps), streams=np.int64(k))
    stats = tuple(jnp.reshape(a, (k, n // k, c)) for a in (s, mean_y, mean_y2))
    return y, stats, mu, var


def backward(g: jax.Array, y: jax.Array, stats, u0: jax.Array, v0: jax.Array, alpha_b: float,
             k: int):
    """(∂L/∂x, u, v) by the control process for g, y of shape (N, D, C) and the forward's stats.

    With c = 1 − αb: ∂L/∂x_t = (g_t − c·v_{t−1}·y_t)/s_t − c·u_{t−1};
    v_t = v_{t−1}(1 − c·mean_D(y_t²)) + mean_D(g_t·y_t);
    u_t = αb·u_{t−1} + (mean_D(g_t) − c·v_{t−1}·mean_D(y_t))/s_t; u, v averaged over the streams.
    """
    n, _, c = g.shape
    s, mean_y, mean_y2 = (jnp.reshape(a, (n, c)).astype(g.dtype) for a in stats)
    dx, u, v = _call("bwd", g.dtype, [g.shape, (c,), (c,)], g, y.astype(g.dtype), s, mean_y,
                     mean_y2, u0.astype(g.dtype), v0.astype(g.dtype),
                     alpha_b=np.float64(alpha_b), streams=np.int64(k))
    return dx, u.astype(u0.dtype), v.astype(v0.dtype)  # the streams' cotangents keep their dtype
