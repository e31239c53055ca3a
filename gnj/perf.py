"""Performance switches gnj sets: XLA flags applied before JAX initialises its backend.

``apply()`` merges :data:`XLA_FLAG_DEFAULTS` into ``XLA_FLAGS``; it must run before the first JAX
computation (XLA reads ``XLA_FLAGS`` once, when the backend starts), e.g. first thing in
``gnj.main.main``. Flags the user already set in ``XLA_FLAGS`` win over these defaults, and
``GNJ_XLA_DEFAULTS=0`` in the environment turns the defaults off (to A/B them: ``make bench``
does so in its ``xla_flags`` case).

Every default here was measured on the train step (see ``docs/performance.md``); a flag stays only
if it helps measurably and leaves results unchanged up to float rounding:

- ``--xla_cpu_experimental_ynn_fusion_type=`` (empty: no YNNPACK fusions). JAX 0.10's CPU
  backend routes convolutions (and the elementwise/reduction ops around them) through YNNPACK
  fusions by default. YNNPACK has no fast path for the *weight-gradient* convolution of a 3×3
  conv (the window is the whole 32×32 image, the "batch" is the input channels): at batch 128,
  32×32×16 it took ~145 ms against ~21 ms for XLA's own (Eigen) convolution, and the forward and
  input-gradient convolutions were no slower without it. Float32 throughout; only the
  accumulation order of the sums changes.
"""

from __future__ import annotations

import os
import sys
import warnings

#: flag name (without ``--``) -> value; the defaults gnj adds to ``XLA_FLAGS``.
XLA_FLAG_DEFAULTS: dict[str, str] = {
    "xla_cpu_experimental_ynn_fusion_type": "",
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

    Does nothing (returns False) when ``GNJ_XLA_DEFAULTS=0`` is set, and warns and does nothing
    when the JAX backend is already running, since XLA would ignore the change.
    """
    env = os.environ if environ is None else environ
    if env.get(DISABLE_ENV, "1") == "0":
        return False
    if environ is None and backend_initialized():
        warnings.warn("gnj.perf.apply(): the JAX backend is already initialised; XLA_FLAGS "
                      "defaults not applied (call it before the first JAX computation)",
                      stacklevel=2)
        return False
    env["XLA_FLAGS"] = merged_xla_flags(env.get("XLA_FLAGS", ""))
    return True
