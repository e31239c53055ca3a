"""Typed parser of a config file's argument: ``variant[,option][,key=value]...``.

An experiment config file (a *family*) declares once what its argument may hold, and parses it
with :meth:`Family.parse`::

    FAMILY = Family(
        "configs/x/cifar.py", variants=["resnet20", "resnet56"], default="resnet20",
        options=[Option("runlocal"), Option("batch", int, token="b", default=128),
                 Option("epochs", int, token="e"), Option("lr", float),
                 Option("warmup", off="nowarmup")])
    args = FAMILY.parse("resnet56,b64,nowarmup,lr=0.5")
    args.variant, args.batch, args.warmup, args.lr   # "resnet56", 64, False, 0.5

- The **variant** is the first token, or the first ``n`` tokens when the family's variants are
  ``n``-token names (``"resnet56,batch"``). A family may also accept *patterned* variants
  (``Family(patterns={"mobilenet_v2_w": float})`` accepts ``mobilenet_v2_w1.4``; the value is
  ``args.pattern_value``), and *aliases* of variant tokens (``aliases={"plain": "none"}``:
  ``vgg10,plain`` is ``vgg10,none``). An empty argument is the family's ``default``; when the
  first token is an option, not a variant, the default variant is used (``runlocal`` =
  ``<default>,runlocal``).
- A **flag** (``Option("digits")``, type ``bool``) is its word; ``off="nowarmup"`` names the word
  that sets it False. A **value** option (``int``, ``float``, ``str`` or :data:`Ints`) is written
  compactly as its token followed by the value (``b64``, ``lr0.5``, ``tc10_20_40``), or as
  ``key=value`` with its key or token (``batch=64``, ``b=64``; flags: ``runlocal=true``).
- ``Option(..., only=pred, needs="norm 'group'")`` restricts an option to the variants for which
  ``pred(args)`` holds.

Every option not given keeps its declared default (``None`` unless stated: "not given", for
defaults that depend on the variant). A bad token raises ``ValueError`` naming the token, the
family, and the valid variants or options. See ``docs/experiments.md``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any


class Ints(tuple):
    """Option type: integers joined by ``_`` (``tc10_20_40`` → ``(10, 20, 40)``)."""


_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str", Ints: "ints"}


def parse_value(text: str, kind: type) -> Any:
    """``text`` as a value of ``kind``; ``ValueError`` when it is not one."""
    if kind is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
    elif kind is int:
        if text.isdigit():
            return int(text)
    elif kind is float:
        try:
            value = float(text)
        except ValueError:
            pass
        else:
            if math.isfinite(value):
                return value
    elif kind is Ints:
        parts = text.split("_")
        if all(p.isdigit() for p in parts):
            return tuple(int(p) for p in parts)
    elif kind is str:
        if text:
            return text
    else:
        raise TypeError(f"unsupported option type {kind!r}")
    raise ValueError(f"{text!r} is not a valid {_TYPE_NAMES[kind]}")


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of a family.

    ``key``: its name in the parsed result (and in the ``key=value`` form). ``kind``: ``bool``
    (a flag) or the value's type. ``token``: the flag's word or the value's compact prefix
    (default: ``key``). ``off``: a flag's negative word. ``only`` / ``needs``: the variants that
    accept it, and what they are in words. ``metavar``: the value's name in the listing
    (default: ``key``).
    """

    key: str
    kind: type = bool
    token: str = ""
    default: Any = None
    off: str = ""
    only: Callable[[Args], bool] | None = None
    needs: str = ""
    metavar: str = ""

    @property
    def word(self) -> str:
        return self.token or self.key

    @property
    def is_flag(self) -> bool:
        return self.kind is bool

    def describe(self) -> str:
        """How the option is written: ``b<batch>``, ``warmup, nowarmup``, ``digits``."""
        text = self.word if self.is_flag else f"{self.word}<{self.metavar or self.key}>"
        if self.off:
            text += f", {self.off}"
        if self.needs:
            text += f" ({self.needs})"
        return text

    def match(self, token: str) -> tuple[bool, Any]:
        """``(True, value)`` when the compact form ``token`` is this option, else ``(False, _)``."""
        if self.is_flag:
            if token == self.word:
                return True, True
            if self.off and token == self.off:
                return True, False
            return False, None
        if not token.startswith(self.word) or token == self.word:
            return False, None
        try:
            return True, parse_value(token[len(self.word):], self.kind)
        except ValueError:
            return False, None


@dataclasses.dataclass(frozen=True)
class Args:
    """A parsed argument: the variant, its tokens, and every option's value."""

    family: str
    variant: str
    parts: tuple[str, ...]
    values: Mapping[str, Any]
    given: frozenset[str]
    pattern_value: Any = None

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(f"{self.__dict__.get('family', '?')}: no option {name!r}")


@dataclasses.dataclass(frozen=True)
class Family:
    """A config file's variants and options (see the module docstring)."""

    name: str
    variants: Sequence[str]
    options: Sequence[Option]
    default: str
    patterns: Mapping[str, type] = dataclasses.field(default_factory=dict)
    aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        keys = [o.key for o in self.options]
        words = [w for o in self.options for w in (o.word, o.off) if w]
        for what, seen in (("option key", keys), ("option word", words),
                           ("variant", list(self.variants))):
            dup = {x for x in seen if seen.count(x) > 1}
            if dup:
                raise ValueError(f"{self.name}: duplicate {what} {sorted(dup)}")
        if len({len(v.split(",")) for v in self.variants}) != 1:
            raise ValueError(f"{self.name}: variants have different numbers of tokens")

    @property
    def variant_tokens(self) -> int:
        return len(self.variants[0].split(","))

    def describe_options(self) -> str:
        return ", ".join(o.describe() for o in self.options)

    def describe_variants(self) -> str:
        return ", ".join([*self.variants, *(f"{p}<{_TYPE_NAMES[t]}>"
                                            for p, t in self.patterns.items())])

    def _variant(self, name: str) -> tuple[bool, Any]:
        """Whether ``name`` is a variant, and the value of the pattern it matches (or None)."""
        for prefix, kind in self.patterns.items():
            if name.startswith(prefix):
                try:
                    return True, parse_value(name[len(prefix):], kind)
                except ValueError:
                    pass
        return name in self.variants, None

    def parse(self, arg: str | None) -> Args:
        """The typed :class:`Args` of ``arg``; ``ValueError`` naming the first bad token."""
        tokens = [t.strip() for t in (arg or "").split(",") if t.strip()]
        n = self.variant_tokens
        tokens[:n] = [self.aliases.get(t, t) for t in tokens[:n]]
        variant = ",".join(tokens[:n])
        known, pattern_value = self._variant(variant)
        if not tokens or (not known and self._option_of(tokens[0]) is not None):
            tokens = [*self.default.split(","), *tokens]  # the default variant
            variant = self.default
            known, pattern_value = self._variant(variant)
        if not known:
            raise ValueError(f"{self.name}: no variant {variant!r}; valid: "
                             f"{self.describe_variants()} (options after a comma: "
                             f"{self.describe_options()})")
        values = {o.key: o.default for o in self.options}
        given: set[str] = set()
        parsed: list[tuple[Option, str]] = []
        for token in tokens[n:]:
            hit = self._option_of(token)
            if hit is None:
                raise ValueError(f"{self.name}: unknown option {token!r} in {arg!r}; valid "
                                 f"options: {self.describe_options()}")
            option, value = hit
            values[option.key] = value
            given.add(option.key)
            parsed.append((option, token))
        args = Args(self.name, variant, tuple(tokens[:n]), values, frozenset(given),
                    pattern_value)
        for option, token in parsed:
            if option.only is not None and not option.only(args):
                raise ValueError(f"{self.name}: unknown option {token!r} in {arg!r} for variant "
                                 f"{variant!r}: {option.word} needs {option.needs}; valid "
                                 f"options: {self.describe_options()}")
        return args

    def _option_of(self, token: str) -> tuple[Option, Any] | None:
        """The option a token names and its value; ``ValueError`` for a bad ``key=value``."""
        if "=" in token:
            key, _, text = token.partition("=")
            for option in self.options:
                if key in (option.key, option.word):
                    try:
                        return option, parse_value(text, option.kind)
                    except ValueError as e:
                        raise ValueError(f"{self.name}: option {token!r}: {e}; valid: "
                                         f"{option.describe()}") from None
            return None
        matches = [(o, v) for o in self.options for ok, v in [o.match(token)] if ok]
        if not matches:
            return None
        return max(matches, key=lambda m: len(m[0].word))  # the longest token wins
