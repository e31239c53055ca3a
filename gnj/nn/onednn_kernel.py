"""Build, load and call the oneDNN convolution kernel (``onednn_conv.cc``, XLA FFI).

oneDNN comes from PyPI: ``onednn-cpu-gomp`` (``libdnnl.so``, oneDNN 3.2 for CPU, GNU OpenMP
threading) and ``onednn-devel-cpu-gomp`` (its headers); both install into the environment's
prefix (``<venv>/lib``, ``<venv>/include``), found here through their installed file lists
(``importlib.metadata``). The source is compiled on first use by :mod:`gnj.nn.cpp_build`
(``$GNJ_CXX``, cache ``$GNJ_KERNEL_CACHE``, atomic build), linked against that ``libdnnl`` with
an rpath, keyed by the source, the flags and the library's path and version. If the packages
are missing, the build fails or the library does not load, :func:`available` warns once and
returns False, and the caller (``gnj/nn/onednn_conv.py``) uses XLA's convolution.

Threads: oneDNN runs its work in GNU OpenMP's pool, ``$OMP_NUM_THREADS`` threads (default: the
cores this process may use); see docs/performance.md for how it shares the cores with XLA's.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import warnings
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gnj.nn import cpp_build
from gnj.nn.cpp_build import compiler

SOURCE = Path(__file__).with_name("onednn_conv.cc")
FLAGS = ("-O2", "-shared", "-fPIC", "-std=c++17", "-fopenmp", "-w")
RUNTIME_PACKAGE, HEADERS_PACKAGE = "onednn-cpu-gomp", "onednn-devel-cpu-gomp"
#: pass -> (FFI target name, exported handler symbol); float32 only
TARGETS = {
    "fwd": ("gnj_onednn_conv_fwd_f32", "GnjOnednnConvFwdF32"),
    "bwd_data": ("gnj_onednn_conv_bwd_data_f32", "GnjOnednnConvBwdDataF32"),
    "bwd_weights": ("gnj_onednn_conv_bwd_weights_f32", "GnjOnednnConvBwdWeightsF32"),
}
PASSES = {"fwd": 0, "bwd_data": 1, "bwd_weights": 2}
DTYPES = ("float32",)
INSTALL_HINT = f"pip install {RUNTIME_PACKAGE} {HEADERS_PACKAGE}"


def _package_file(package: str, suffix: str) -> Path:
    """The installed file of ``package`` whose path ends with ``suffix``."""
    try:
        files = importlib.metadata.distribution(package).files or []
    except importlib.metadata.PackageNotFoundError as e:
        raise RuntimeError(f"the package {package!r} is not installed ({INSTALL_HINT})") from e
    for f in files:
        if str(f).replace("\\", "/").endswith(suffix):
            return Path(f.locate()).resolve()
    raise RuntimeError(f"the package {package!r} has no file ending in {suffix!r}")


def locate() -> tuple[Path, Path]:
    """(include dir, directory of ``libdnnl.so``) of the installed oneDNN packages."""
    header = _package_file(HEADERS_PACKAGE, "include/oneapi/dnnl/dnnl.hpp")
    lib = _package_file(RUNTIME_PACKAGE, "libdnnl.so")
    return header.parents[2], lib.parent


def build_command(out: str | Path) -> list[str]:
    """The compiler command that builds the library at ``out``."""
    include, libdir = locate()
    return [compiler(), *FLAGS, f"-I{jax.ffi.include_dir()}", f"-I{include}", str(SOURCE),
            "-o", str(out), f"-L{libdir}", "-ldnnl", f"-Wl,-rpath,{libdir}"]


def library_path() -> Path:
    """Where the library for this source, flags, compiler, JAX and oneDNN lives."""
    include, libdir = locate()
    version = importlib.metadata.version(RUNTIME_PACKAGE)
    return cpp_build.library_path("onednn_conv", (SOURCE.read_bytes(), " ".join(FLAGS),
                                                  str(include), str(libdir), version))


def build() -> Path:
    """Compile the library unless it is cached; raises ``RuntimeError`` naming the cause."""
    return cpp_build.build(library_path(), build_command)


@functools.cache
def _load() -> ctypes.CDLL | None:
    """Build (if needed) and load the library and register its FFI targets; None on failure."""
    try:
        lib = cpp_build.load(build(), TARGETS.values())
    except (RuntimeError, OSError) as e:
        warnings.warn(f"gnj: the oneDNN convolution kernel is not available, so XLA's "
                      f"convolution is used instead. {e}", RuntimeWarning, stacklevel=3)
        return None
    lib.GnjOnednnConvPlan.restype = ctypes.c_int
    lib.GnjOnednnConvPlan.argtypes = [ctypes.POINTER(ctypes.c_int64), ctypes.c_char_p,
                                      ctypes.c_int64]
    return lib


def available() -> bool:
    """Whether the kernel is built and registered (the first call builds it; warns on failure)."""
    return _load() is not None


def supports_dtype(dtype) -> bool:
    return jnp.dtype(dtype).name in DTYPES


def _geometry(x_shape, w_shape, y_shape, conv: Sequence[int], pass_: str, dtype) -> list[int]:
    n, h, w, c = x_shape
    _, oh, ow, o = y_shape
    kh, kw = w_shape[:2]
    return [n, h, w, c, oh, ow, o, kh, kw, *conv, PASSES[pass_],
            DTYPES.index(jnp.dtype(dtype).name)]


@functools.cache
def plan(x_shape: tuple[int, ...], w_shape: tuple[int, ...], y_shape: tuple[int, ...],
         conv: tuple[int, ...], pass_: str, dtype: str) -> tuple[bool, str]:
    """Create (and cache in the library) oneDNN's primitive for one conv pass.

    ``conv`` = (stride h, stride w, pad top, bottom, left, right, dilation h, w, groups,
    OpenMP threads (0: the default)).
    Returns (whether oneDNN accepts it, its implementation name or the reason it did not).
    """
    lib = _load()
    if lib is None:
        return False, "the oneDNN kernel is not available"
    geometry = (ctypes.c_int64 * 21)(*_geometry(x_shape, w_shape, y_shape, conv, pass_, dtype))
    info = ctypes.create_string_buffer(512)
    ok = lib.GnjOnednnConvPlan(geometry, info, len(info))
    return bool(ok), info.value.decode(errors="replace")


def call(pass_: str, a: jax.Array, b: jax.Array, out_shape: tuple[int, ...],
         conv: Sequence[int]) -> jax.Array:
    """The FFI call of one pass: fwd (x, w) → y, bwd_data (dy, w) → dx, bwd_weights (x, dy) → dw."""
    out = jax.ShapeDtypeStruct(out_shape, a.dtype)
    return jax.ffi.ffi_call(TARGETS[pass_][0], out)(a, b, conv=np.asarray(conv, np.int64))
