"""Performance switches gnj sets: XLA flags applied before JAX initialises its backend.

``apply()`` merges :data:`XLA_FLAG_DEFAULTS` into ``XLA_FLAGS``; it must run before the first JAX
computation (XLA reads ``XLA_FLAGS`` once, when the backend starts), e.g. first thing in
``gnj.main.main``. Flags the user already set in ``XLA_FLAGS`` win over these defaults, and
``GNJ_XLA_DEFAULTS=0`` in the environment turns the defaults off (to A/B them: ``make bench``
does so in its ``xla_flags`` case).

Every default here was measured on the train step (docs/performance.md, "XLA flags"); a flag
stays only if it helps measurably and leaves results unchanged up to float rounding:

- ``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``: XLA:CPU sends
  convolutions, and the elementwise ops and reductions around them, to YNNPACK fusions; this
  keeps YNNPACK for the reductions and elementwise work but leaves every convolution to XLA's
  own kernel, whose weight gradient was several times faster. Float32 throughout; only the
  accumulation order of the sums changes.

``GNJ_XLA_DEFAULTS`` and ``GNJ_ALLOCATOR`` are read through :mod:`gnj.settings`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
import warnings

from gnj import settings

#: flag name (without ``--``) -> value; the defaults gnj adds to ``XLA_FLAGS``.
XLA_FLAG_DEFAULTS: dict[str, str] = {
    "xla_cpu_experimental_ynn_fusion_type": "-individual_convolution",
}

#: set to "0" to keep XLA's own defaults (A/B comparisons, debugging).
DISABLE_ENV = "GNJ_XLA_DEFAULTS"


def _flag_names(flags: str) -> set[str]:
    return {f.lstrip("-").split("=", 1)[0] for f in flags.split() if f.startswith("--")}


def merged_xla_flags(existing: str, defaults: dict[str, str] | None = None) -> str:
    """``existing`` plus every default whose flag name ``existing`` does not already set."""
    defaults = XLA_FLAG_DEFAULTS if defaults is None else defaults
    have = _flag_names(existing)
    extra = [f"--{k}={v}" for k, v in defaults.items() if k not in have]
    return " ".join([existing.strip(), *extra]).strip()


def accelerator_plugins() -> list[str]:
    """JAX accelerator plugins installed here, found the way JAX finds them (the ``jax_plugins``
    entry points and namespace package, e.g. ``jax-cuda12-plugin``) plus TPU's ``libtpu``;
    empty on a CPU-only install."""
    found = {ep.name for ep in importlib.metadata.entry_points(group="jax_plugins")}
    try:
        import jax_plugins

        found.update(m.name for m in pkgutil.iter_modules(jax_plugins.__path__))
    except ImportError:
        pass
    if importlib.util.find_spec("libtpu") is not None:
        found.add("libtpu")
    return sorted(found)


def expects_cpu_backend(environ: dict[str, str] | None = None) -> bool:
    """Whether JAX will compute on its CPU backend, judged *before* JAX starts (asking
    ``jax.default_backend()`` would start it, after which XLA_FLAGS changes are ignored).

    ``JAX_PLATFORMS`` decides when set (its first entry); otherwise JAX takes an accelerator
    whenever an accelerator plugin is installed, so CPU means none is. Once JAX has started, its
    default backend answers.
    """
    env = os.environ if environ is None else environ
    if environ is None and backend_initialized():
        import jax

        return jax.default_backend() == "cpu"
    platforms = env.get("JAX_PLATFORMS", "") or env.get("JAX_PLATFORM_NAME", "")
    if platforms.strip():
        return platforms.split(",")[0].strip().lower() == "cpu"
    return not accelerator_plugins()


def backend_initialized() -> bool:
    """Whether JAX has already started a backend (then XLA_FLAGS changes have no effect)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(getattr(xla_bridge, "_backends", {}))
    except Exception:  # private API moved: assume not started
        return False


def apply(environ: dict[str, str] | None = None) -> bool:
    """Merge the defaults into ``XLA_FLAGS``; True if they were applied.

    Does nothing (returns False) when ``GNJ_XLA_DEFAULTS=0`` is set or JAX will not run on the
    CPU (the defaults are XLA:CPU flags; :func:`expects_cpu_backend`), and warns and does nothing
    when the JAX backend is already running, since XLA would ignore the change.
    """
    env = os.environ if environ is None else environ
    if settings.get(DISABLE_ENV, env) == "0" or not expects_cpu_backend(environ):
        return False
    if environ is None and backend_initialized():
        warnings.warn("gnj.perf.apply(): the JAX backend is already initialised; XLA_FLAGS "
                      "defaults not applied (call it before the first JAX computation)",
                      stacklevel=2)
        return False
    env["XLA_FLAGS"] = merged_xla_flags(env.get("XLA_FLAGS", ""))
    return True


# ------------------------------------------------------------------------------ allocator

#: Where :func:`jemalloc_path` looks (Debian/Ubuntu ``libjemalloc2``, Fedora/RHEL, /usr/local).
JEMALLOC_PATHS = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                  "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2", "/usr/lib64/libjemalloc.so.2",
                  "/usr/local/lib/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2")
#: jemalloc keeps freed pages mapped (no decay), so each execution reuses the previous one's.
JEMALLOC_CONF = "retain:true,dirty_decay_ms:-1,muzzy_decay_ms:-1"
#: set to "system" to keep the C library's allocator.
ALLOCATOR_ENV = "GNJ_ALLOCATOR"


def jemalloc_path(paths: tuple[str, ...] = JEMALLOC_PATHS) -> str | None:
    """The first jemalloc shared library found, or None."""
    return next((p for p in paths if os.path.exists(p)), None)


def allocator_env(environ: dict[str, str] | None = None,
                  paths: tuple[str, ...] = JEMALLOC_PATHS) -> dict[str, str]:
    """Environment to start a process with jemalloc preloaded (``{}`` when not applicable).

    Why: XLA:CPU allocates each execution's temporaries as one buffer (202 MB for the ResNet-20
    step at batch 128). That is above glibc's largest mmap threshold (32 MiB), so every step
    maps fresh pages and faults them in: ~50 000 minor faults and ~0.15 s of system time per
    step on the 2-core VM of docs/performance.md. jemalloc with decay off reuses the pages
    (~2 700 faults, ~0.05 s). An allocator can only be chosen when a process starts, so this is
    for launchers (the Makefile's ``run`` and ``bench``). Empty when ``GNJ_ALLOCATOR=system``,
    when ``LD_PRELOAD`` is already set, when JAX will run on an accelerator (the measurement is
    XLA:CPU's; :func:`expects_cpu_backend`), or when no jemalloc is installed
    (``apt-get install libjemalloc2``).
    """
    env = os.environ if environ is None else environ
    if (settings.get(ALLOCATOR_ENV, env) == "system" or env.get("LD_PRELOAD")
            or not expects_cpu_backend(environ)):
        return {}
    lib = jemalloc_path(paths)
    if lib is None:
        return {}
    return {"LD_PRELOAD": lib, "MALLOC_CONF": env.get("MALLOC_CONF") or JEMALLOC_CONF}


def main(argv: list[str] | None = None) -> None:
    """``python -m gnj.perf allocator-env``: prints ``K=V`` words for ``env`` in a launcher."""
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["allocator-env"]:
        sys.exit("usage: python -m gnj.perf allocator-env")
    print(" ".join(f"{k}={v}" for k, v in allocator_env().items()))


if __name__ == "__main__":
    main()
