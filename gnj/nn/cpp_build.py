"""Compile-on-first-use for gnj's C++ XLA FFI kernels: keyed cache, atomic build, registration.

A kernel's shared library is built with the compiler ``$GNJ_CXX`` into the cache directory
``$GNJ_KERNEL_CACHE`` (both read through :mod:`gnj.settings`) under a name keyed by a hash of
everything that determines the binary (the source, the command's flags, the compiler, the JAX
version, and whatever else the kernel names, e.g. the CPU model for ``-march=native`` code). The
library is written to a temporary name and moved into place with ``os.replace``, so concurrent
processes (pytest-xdist workers) may build it at once. Each kernel module decides what to do
when :func:`build` raises (typically: warn once, use XLA).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import jax

from gnj import settings

CXX_ENV, CACHE_ENV = "GNJ_CXX", "GNJ_KERNEL_CACHE"

_libraries: list[ctypes.CDLL] = []  # keep every loaded library alive: XLA holds its handlers
_registered: set[str] = set()


def compiler() -> str:
    """The C++ compiler: ``$GNJ_CXX``, else ``g++``."""
    return settings.get(CXX_ENV)


def cpu_model() -> str:
    """The CPU's model name and feature flags (what ``-march=native`` compiles for)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$GNJ_KERNEL_CACHE``, else ``~/.cache/gnj/kernels``."""
    return Path(settings.get(CACHE_ENV))


def library_path(stem: str, key_parts: Iterable[bytes | str]) -> Path:
    """``<cache>/<stem>-<hash>.so``, the hash over ``key_parts``, the compiler and JAX's version."""
    key = hashlib.sha256()
    for part in (*key_parts, compiler(), jax.__version__):
        key.update(part.encode() if isinstance(part, str) else part)
        key.update(b"\0")
    return cache_dir() / f"{stem}-{key.hexdigest()[:16]}.so"


def build(path: Path, command: Callable[[str], list[str]]) -> Path:
    """Compile to ``path`` with ``command(output_file)`` unless it exists.

    Raises ``RuntimeError`` naming the command and the end of its stderr.
    """
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp.so")
    os.close(fd)
    cmd = command(tmp)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` exited {proc.returncode}:\n"
                               f"{proc.stderr.strip()[-4000:]}")
        os.replace(tmp, path)
    except OSError as e:  # compiler not found, cache not writable
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load(path: Path, targets: Iterable[tuple[str, str]]) -> ctypes.CDLL:
    """Load the library at ``path`` and register its ``(FFI target name, handler symbol)`` pairs
    on CPU. Raises ``OSError`` if it cannot be loaded."""
    lib = ctypes.CDLL(str(path))
    _libraries.append(lib)
    for name, symbol in targets:
        if name not in _registered:  # XLA keeps the first registration of a name
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)),
                                        platform="cpu")
            _registered.add(name)
    return lib
