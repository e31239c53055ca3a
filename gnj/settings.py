"""The process-wide switches that live outside the experiment config, in one place.

Everything that changes what a run computes belongs in the config (``configs/``). The switches
below only choose *how* it is computed (which kernel, which compiler, which allocator) or where
build products are cached; each is an environment variable so that it can be set for a whole
process, a test session or a benchmark without touching a config. No other module of gnj reads a
``GNJ_*`` variable: they call :func:`get`. A paper's package may :func:`declare` a switch of its
own (e.g. the implementation of its layer); its docs page lists it.

=======================  ==================  ====================================================
variable                 default             meaning
=======================  ==================  ====================================================
``GNJ_CONV_IMPL``        ``auto``            ``auto``: oneDNN convolutions on CPU where they
                                             apply, else XLA's; ``xla`` / ``onednn`` force one
``GNJ_CXX``              ``g++``             C++ compiler for the custom CPU kernels
``GNJ_KERNEL_CACHE``     ``~/.cache/gnj/     where compiled kernels are kept
                         kernels``
``GNJ_XLA_DEFAULTS``     ``1``               ``0`` keeps XLA's own flags (``gnj.perf``)
``GNJ_ALLOCATOR``        ``jemalloc``        ``system`` keeps the system allocator for the
                                             launchers (``make run``, ``make bench``)
=======================  ==================  ====================================================
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Setting:
    """One environment switch: its variable, default and (when closed) its valid values."""

    env: str
    default: str
    choices: tuple[str, ...] = ()
    doc: str = ""


SETTINGS: dict[str, Setting] = {s.env: s for s in (
    Setting("GNJ_CONV_IMPL", "auto", ("auto", "xla", "onednn"), "convolution implementation"),
    Setting("GNJ_CXX", "g++", (), "C++ compiler for the custom CPU kernels"),
    Setting("GNJ_KERNEL_CACHE", str(Path.home() / ".cache" / "gnj" / "kernels"), (),
            "directory of compiled kernels"),
    Setting("GNJ_XLA_DEFAULTS", "1", ("0", "1"), "gnj's XLA flag defaults on (1) or off (0)"),
    Setting("GNJ_ALLOCATOR", "jemalloc", ("jemalloc", "system"), "allocator for the launchers"),
)}


def declare(setting: Setting) -> Setting:
    """Add a switch to :data:`SETTINGS` (a paper's own; idempotent for the same definition)."""
    known = SETTINGS.setdefault(setting.env, setting)
    if known != setting:
        raise ValueError(f"{setting.env} is already a gnj setting, defined differently")
    return setting


def get(env: str, environ: dict[str, str] | None = None) -> str:
    """The value of switch ``env`` (from ``environ``, default ``os.environ``), checked.

    An empty value counts as unset. A value outside a closed switch's choices raises a
    ValueError naming the variable, the value and the valid values.
    """
    if env not in SETTINGS:
        raise KeyError(f"{env} is not a gnj setting; settings: {', '.join(SETTINGS)}")
    setting = SETTINGS[env]
    value = (os.environ if environ is None else environ).get(env, "") or setting.default
    if setting.choices and value not in setting.choices:
        raise ValueError(
            f"{env}={value!r}: not a valid {setting.doc}; valid: {', '.join(setting.choices)}")
    return value
