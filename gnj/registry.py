"""One registry type for every axis of variation (norms, inits, activations, models, ...).

A config names an entry by string with inline keyword arguments::

    NORMS.lookup("group(groups=8)")          # -> functools.partial(GroupNorm, groups=8)
    INITS.lookup("delta_orthogonal(gain=1.41)")

Arguments are Python literals (numbers, strings, tuples, lists, dicts, booleans, None), parsed
with ``ast.literal_eval``; nothing in a spec is executed. Unknown names raise a ``ValueError``
that lists the valid ones.

Each entry has one canonical name (``register``). Other spellings are aliases, declared as one
table per registry next to its entries (``NORMS.alias({"bn": "batch", ...})``); an alias names
exactly one canonical entry and can never shadow one. :meth:`Registry.names` lists the canonical
names only, :meth:`Registry.aliases` the table.
"""

from __future__ import annotations

import ast
import functools
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"name(k=v, ...)"`` into ``("name", {k: v})``.

    Raises:
      ValueError: if the spec is not a call with literal keyword arguments.
    """
    text = spec.strip()
    if not text:
        raise ValueError("empty registry spec")
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"cannot parse registry spec {spec!r}: {e.msg}") from None
    if isinstance(node, ast.Name):
        return node.id, {}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.args:
            raise ValueError(
                f"registry spec {spec!r}: use keyword arguments only, e.g. name(k=v)")
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise ValueError(f"registry spec {spec!r}: **kwargs are not allowed")
            if kw.arg in kwargs:
                raise ValueError(f"registry spec {spec!r}: keyword {kw.arg!r} is given twice")
            try:
                kwargs[kw.arg] = ast.literal_eval(kw.value)
            except ValueError:
                raise ValueError(
                    f"registry spec {spec!r}: argument {kw.arg!r} is not a literal") from None
        return node.func.id, kwargs
    raise ValueError(f"registry spec {spec!r} must look like 'name' or 'name(k=v, ...)'")


class Registry:
    """A named table of factories (classes or functions) of one kind, plus its alias table."""

    def __init__(self, kind: str, populated_by: tuple[str, ...] = ()):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}
        self._aliases: dict[str, str] = {}
        self._populated_by = populated_by

    def _populate(self) -> None:
        """Import the packages whose modules register this registry's entries (once): the core
        package of the kind, then ``gnj.proj`` (every paper's entries)."""
        if self._populated_by:
            modules, self._populated_by = self._populated_by, ()
            for module in modules:
                importlib.import_module(module)

    def register(self, name: str | None = None) -> Callable:
        """Decorator: ``@NORMS.register("batch")``. The default name is the object's name;
        other names for the entry go into the registry's alias table (:meth:`alias`)."""

        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            key = name or obj.__name__
            if key in self._aliases or (key in self._entries and self._entries[key] is not obj):
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = obj
            return obj

        return decorator

    def alias(self, table: Mapping[str, str]) -> None:
        """Add ``{alias: canonical name}`` entries to this registry's alias table.

        The canonical name may be registered later (lookups resolve at call time). Raises
        ``ValueError`` if an alias is a canonical name or already an alias of another name.
        """
        for alias, target in table.items():
            if alias in self._entries or self._aliases.get(alias, target) != target:
                raise ValueError(f"{self.kind} alias {alias!r} is already registered")
            if target in self._aliases:
                raise ValueError(f"{self.kind} alias {alias!r} must name a canonical {self.kind}, "
                                 f"not the alias {target!r}")
            self._aliases[alias] = target

    def canonical(self, name: str) -> str:
        """The canonical name of ``name`` (itself or the entry its alias names)."""
        return self._aliases.get(name, name)

    def get(self, name: str) -> Callable[..., Any]:
        """The registered factory called ``name`` or aliased by it (no arguments applied)."""
        self._populate()
        entry = self._entries.get(self.canonical(name))
        if entry is None:
            aliases = ", ".join(f"{a}={t}" for a, t in sorted(self._aliases.items()))
            raise ValueError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}"
                + (f" (aliases: {aliases})" if aliases else ""))
        return entry

    def lookup(self, spec: str, **defaults: Any) -> functools.partial:
        """``functools.partial`` of the named factory with the spec's arguments.

        ``defaults`` are applied first, so arguments written in the spec win over them.
        """
        name, kwargs = parse_spec(spec)
        return functools.partial(self.get(name), **{**defaults, **kwargs})

    def names(self) -> list[str]:
        """The canonical names, sorted (one per entry; aliases are in :meth:`aliases`)."""
        self._populate()
        return sorted(self._entries)

    def aliases(self) -> dict[str, str]:
        """The alias table, ``{alias: canonical name}``."""
        self._populate()
        return dict(sorted(self._aliases.items()))

    def __contains__(self, name: str) -> bool:
        self._populate()
        return self.canonical(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._populate()
        return len(self._entries)


_PAPERS = "gnj.proj"
NORMS = Registry("norm", ("gnj.nn", _PAPERS))
CONVS = Registry("conv", ("gnj.nn", _PAPERS))
INITS = Registry("init", ("gnj.nn", _PAPERS))
ACTIVATIONS = Registry("activation", ("gnj.nn", _PAPERS))
MODELS = Registry("model", ("gnj.models", _PAPERS))
DATASETS = Registry("dataset", ("gnj.data", _PAPERS))
OPTIMIZERS = Registry("optimizer", ("gnj.optim", _PAPERS))
SCHEDULES = Registry("schedule", ("gnj.optim", _PAPERS))
#: analyses (gnj.analysis.hooks): analyze, train, sweep and report entries
ANALYSES = Registry("analysis", ("gnj.analysis", _PAPERS))


def spec_name(spec: str) -> str:
    """The entry name of a spec: ``spec_name("group(groups=8)") == "group"``."""
    return parse_spec(spec)[0]
