"""Analyses as hooks: every analysis registers by name in ``gnj.registry.ANALYSES``.

Four kinds of entry, told apart by their ``when`` attribute (docs/analysis.md#hooks):

- ``"analyze"`` (the default, a plain ``@ANALYSES.register("name")``): ``fn(ctx) -> dict``
  with ``ctx`` an :class:`AnalysisContext`. ``--mode=analyze`` (``gnj.analysis.run``) merges
  the dicts of the hooks named in ``config.analysis.hooks`` (empty: every analyze hook) into
  ``analysis.json``. A hook returns ``{}`` when it does not apply to the model.
- ``"train"`` (:func:`train_hook`): ``build(config, model, preprocess) -> hook(state, batch)
  -> {metric: scalar}``; the training loop builds it when ``config.analysis.<every>`` > 0 and
  calls it every that many steps, merging its scalars into the next logged record (device
  scalars stay on the device until that record is written).
- ``"sweep"`` (:func:`sweep_hook`): ``fn(root, analyses) -> [paths written]``, given every
  ``analysis.json`` under a sweep's root (``python -m gnj.analysis.plots``).
- ``"report"`` (:func:`report_columns`): ``fn() -> (Column, ...)``, extra columns of the
  results table of ``python -m gnj.report`` (the median over a group's repeats of
  ``column.value(run)``, shown when any group has a finite value).

Analysis settings come from ``config.analysis``; a key the config lacks falls back to the
declared default (``gnj.config_schema.FIELDS``): :func:`setting`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from gnj import config_schema
from gnj.registry import ANALYSES
from gnj.validate import ConfigError

ANALYZE, TRAIN, SWEEP, REPORT = "analyze", "train", "sweep", "report"


@dataclasses.dataclass(frozen=True)
class AnalysisContext:
    """What an analyze hook sees: one model at one set of inputs.

    ``images``: model inputs (preprocessed, NHWC); ``variables``: the Flax variables analysed;
    ``rng``: a NumPy generator seeded with ``analysis.seed`` (a fresh one per hook, so a hook's
    numbers do not depend on which other hooks run).
    """

    model: Any
    variables: Any
    images: jax.Array
    config: Any
    rng: np.random.Generator

    def setting(self, key: str) -> Any:
        """``config.analysis.<key>``, or its declared default."""
        return setting(self.config, key)


def setting(config: Any, key: str) -> Any:
    """``config.analysis.<key>`` if the config has it, else ``FIELDS["analysis.<key>"]``'s
    default (a config without an ``analysis`` section works too).

    Raises:
      KeyError: ``key`` is neither in the config nor declared.
    """
    section = config.get("analysis", None) if hasattr(config, "get") else None
    if section is not None and key in section:
        return section[key]
    return config_schema.FIELDS[f"analysis.{key}"].default


def name_list(value: Any) -> tuple[str, ...]:
    """Names given as ``"a,b"`` (a command-line override) or as a sequence, as a tuple."""
    if isinstance(value, str):
        return tuple(n.strip() for n in value.split(",") if n.strip())
    return tuple(value or ())


def when(entry: Callable[..., Any]) -> str:
    """The kind of a registered entry: ``"analyze"``, ``"train"``, ``"sweep"`` or ``"report"``."""
    return getattr(entry, "when", ANALYZE)


def train_hook(name: str, every: str) -> Callable:
    """Decorator registering a train-time hook builder; ``every`` names the ``config.analysis``
    key of its period in steps (0 = off)."""

    def decorator(build: Callable[..., Any]) -> Callable[..., Any]:
        build.when, build.every = TRAIN, every
        return ANALYSES.register(name)(build)

    return decorator


def sweep_hook(name: str) -> Callable:
    """Decorator registering ``fn(root, analyses) -> [paths]`` for a sweep's plots."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.when = SWEEP
        return ANALYSES.register(name)(fn)

    return decorator


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of the results table: row ``key`` (results.csv), ``header`` (results.md),
    ``fmt`` (of a value) and ``value(run) -> float`` of one ``gnj.report.RunResult`` (NaN where
    the run has none)."""

    key: str
    header: str
    fmt: str
    value: Callable[[Any], float]


def report_columns(name: str) -> Callable:
    """Decorator registering ``fn() -> (Column, ...)`` for ``gnj.report``'s table."""

    def decorator(fn: Callable[[], tuple[Column, ...]]) -> Callable[[], tuple[Column, ...]]:
        fn.when = REPORT
        return ANALYSES.register(name)(fn)

    return decorator


def registered_columns() -> tuple[Column, ...]:
    """Every registered report column, by entry name."""
    return tuple(c for columns in of_kind(REPORT).values() for c in columns())


def of_kind(kind: str) -> dict[str, Callable[..., Any]]:
    """``{name: entry}`` of every registered entry of one kind, by name."""
    entries = {name: ANALYSES.get(name) for name in ANALYSES.names()}
    return {name: e for name, e in entries.items() if when(e) == kind}


def selected(config: Any) -> dict[str, Callable[[AnalysisContext], dict[str, Any]]]:
    """The analyze hooks ``config.analysis.hooks`` names (empty or absent: all of them).

    Raises:
      gnj.validate.ConfigError: a name that is not an analyze hook (lists the valid ones).
    """
    available = of_kind(ANALYZE)
    names = name_list(setting(config, "hooks"))
    if not names:
        return available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ConfigError("config.analysis.hooks", names, f"unknown analysis {unknown}",
                          f"valid: {', '.join(available)}")
    return {n: available[n] for n in names}


def run_hooks(model: Any, variables: Any, images: jax.Array, config: Any) -> dict[str, Any]:
    """The merged results of every selected analyze hook at ``images``."""
    seed = int(setting(config, "seed"))
    result: dict[str, Any] = {}
    for hook in selected(config).values():
        ctx = AnalysisContext(model, variables, images, config, np.random.default_rng(seed))
        result.update(hook(ctx))
    return result
