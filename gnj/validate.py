"""Validation of a whole resolved config before anything is written or compiled.

``check(config)`` checks every key against its declared domain (``gnj/config_schema.py``), every
registry spec (the name, and each keyword against the entry's signature: unknown or duplicate
keywords, wrong types, values outside the keyword's domain) and the model section against the
model's fields. ``check_model_shapes`` then builds the model and its optimizer state abstractly
(``jax.eval_shape``: traced, nothing compiled or run), so shape errors surface in the first
second. Every failure is a :class:`ConfigError` whose ``line()`` is the one line the command line
prints: ``error: <key> = <value>: <why>; <what would be valid>``. See ``docs/reliability.md``.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable
from typing import Any

from gnj import config_schema as schema
from gnj import registry


class UsageError(ValueError):
    """A bad invocation: the command line prints ``line()`` and exits with status 2."""

    def line(self) -> str:
        return f"error: {self}"


class ConfigError(UsageError):
    """A config value outside its domain."""

    def __init__(self, key: str, value: Any, why: str, valid: str):
        self.key, self.value, self.why, self.valid = key, value, why, valid
        super().__init__(f"{key} = {_show(value)}: {why}; {valid}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def suggest(name: str, candidates: list[str]) -> str:
    """``"did you mean 'x'? "`` for the nearest candidate (difflib), or ``""``."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


# ----------------------------------------------------------------------------- types


def _split_union(annotation: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in annotation:
        depth += (ch in "[(") - (ch in "])")
        if ch == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return parts


def _matches(value: Any, annotation: str) -> bool | None:
    """Whether ``value`` fits one alternative of a (string) annotation; None: unknown type."""
    if annotation.startswith("Optional[") and annotation.endswith("]"):
        return value is None or _type_fits(value, annotation[9:-1]) is not False
    base = annotation.split("[", 1)[0].strip()
    checks: dict[str, Callable[[Any], bool]] = {
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "None": lambda v: v is None, "NoneType": lambda v: v is None,
        "tuple": lambda v: isinstance(v, (tuple, list)),
        "Sequence": lambda v: isinstance(v, (tuple, list)),
        "list": lambda v: isinstance(v, (tuple, list)),
        "dict": lambda v: isinstance(v, dict),
    }
    return checks[base](value) if base in checks else None


def _type_fits(value: Any, annotation: Any) -> bool | None:
    """True / False whether ``value`` has the annotated type; None when it cannot tell."""
    if annotation is inspect.Parameter.empty or annotation is None:
        return None
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__",
                                                                  str(annotation))
    results = [_matches(value, alt) for alt in _split_union(text)]
    if any(r is True for r in results):
        return True
    if any(r is None for r in results):
        return None
    return False


# ----------------------------------------------------------------------------- registry specs


_CALLER_SUPPLIED = {"SCHEDULES": ("base_lr", "steps_per_epoch", "total_steps")}


def _parameters(entry: Any) -> dict[str, Any] | None:
    """Keyword → annotation of a registry entry; None if it accepts any keyword."""
    if not callable(entry):  # a description (e.g. a DatasetSpec), not a factory: no keywords
        return {}
    fields = getattr(entry, "__dataclass_fields__", None)
    if isinstance(entry, type) and fields is not None:
        return {k: f.type for k, f in fields.items()
                if k not in ("parent", "name") and not str(f.type).startswith("ClassVar")}
    try:
        sig = inspect.signature(entry)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {k: p.annotation for k, p in sig.parameters.items()}


def check_spec(key: str, spec: Any, registry_name: str, with_args: bool = True) -> None:
    """Check one registry spec: parseable, a known name, and keywords the entry accepts, of
    the annotated types and within :data:`~gnj.config_schema.KEYWORD_DOMAINS`."""
    reg: registry.Registry = getattr(registry, registry_name)
    if not isinstance(spec, str):
        raise ConfigError(key, spec, f"not a string ({type(spec).__name__})",
                          f"valid: a {reg.kind} name, e.g. {reg.names()[0]!r}")
    try:
        name, kwargs = registry.parse_spec(spec)
    except ValueError as e:
        why = str(e).split(": ", 1)[-1] if str(e).startswith("registry spec") else str(e)
        raise ConfigError(key, spec, why, f"valid: '{reg.kind}' or '{reg.kind}(k=v, ...)' with "
                          "literal values") from None
    if name not in reg:
        raise ConfigError(key, spec, f"unknown {reg.kind} {name!r}",
                          f"{suggest(name, reg.names())}valid: {', '.join(reg.names())}")
    if kwargs and not with_args:
        raise ConfigError(key, spec, "takes no arguments", f"valid: a bare {reg.kind} name")
    params = _parameters(reg.get(name))
    if params is None:
        return
    accepted = [p for p in params if p not in _CALLER_SUPPLIED.get(registry_name, ())]
    for kw, value in kwargs.items():
        if kw not in accepted:
            valid = f"valid keywords: {', '.join(accepted)}" if accepted else \
                f"valid: {name!r} without arguments"
            raise ConfigError(key, spec, f"{reg.kind} {name!r} has no keyword {kw!r}",
                              suggest(kw, accepted) + valid)
        if _type_fits(value, params[kw]) is False:
            raise ConfigError(key, spec, f"{kw} = {value!r} is not of type {params[kw]}",
                              f"valid: a value of type {params[kw]}")
        domain = schema.KEYWORD_DOMAINS.get(kw)
        why = domain.reason(value) if domain is not None and value is not None else None
        if why:
            raise ConfigError(key, spec, f"{kw} = {value!r}: {why}", f"valid {kw}: "
                              + domain.describe())


# ----------------------------------------------------------------------------- the config


def _check_value(key: str, value: Any, domain: schema.Domain) -> None:
    if isinstance(domain, schema.Spec):
        check_spec(key, value, domain.registry, domain.with_args)
        return
    why = domain.reason(value)
    if why:
        raise ConfigError(key, value, why, "valid: " + domain.describe())


def _spec_registry(field: str) -> str | None:
    for name, reg in schema.MODEL_SPEC_FIELDS.items():
        if field == name or (name.startswith("_") and field.endswith(name)):
            return reg
    return None


def check_model_section(model: Any) -> None:
    """The ``model`` section against the named model's fields: known keys, annotated types,
    :data:`~gnj.config_schema.MODEL_FIELD_DOMAINS`, and registry specs."""
    name = model.get("name")
    _check_value("config.model.name", name, schema.FIELDS["model.name"].domain)
    entry = registry.MODELS.get(name)
    params = _parameters(entry)
    for field, value in model.items():
        key = f"config.model.{field}"
        if field in schema.MODEL_BUILD_KEYS:  # consumed by models.build, not a model field
            _check_value(key, value, schema.FIELDS[f"model.{field}"].domain)
            continue
        if field == "name":
            continue
        if params is not None and field not in params:
            valid = sorted(params)
            raise ConfigError(key, value, f"model {name!r} has no field {field!r}",
                              f"{suggest(field, valid)}valid fields: {', '.join(valid)}")
        reg = _spec_registry(field)
        if reg is not None and isinstance(value, str):
            check_spec(key, value, reg)
            continue
        if params is not None and _type_fits(value, params[field]) is False:
            raise ConfigError(key, value, f"not of type {params[field]}",
                              f"valid: a value of type {params[field]}")
        domain = schema.MODEL_FIELD_DOMAINS.get(field)
        if domain is not None and value is not None and not isinstance(value, (tuple, list)):
            _check_value(key, value, domain)


def check(config: Any) -> None:
    """Raise :class:`ConfigError` for the first invalid value of ``config`` (no side effects)."""
    flat = schema.flatten(config)
    for path, value in flat.items():
        if path.startswith("model."):
            continue
        domain = schema.domain_of(path)
        if domain is not None:
            _check_value(f"config.{path}", value, domain)
    if "model" in config:
        check_model_section(config.model)
    if flat.get("num_steps", 0) == 0 and flat.get("num_epochs", 0) == 0:
        raise ConfigError("config.num_epochs", flat.get("num_epochs"),
                          "the run has no steps (num_steps is 0 too)",
                          "valid: num_steps > 0, or num_epochs > 0 with num_steps = 0")
    _check_batch_sizes(flat)
    _check_normalisation(flat)
    _check_schedule_fits(config)


def _check_normalisation(flat: dict[str, Any]) -> None:
    mean, std = tuple(flat.get("dataset.mean", ())), tuple(flat.get("dataset.std", ()))
    if len(mean) != len(std):
        raise ConfigError("config.dataset.std", std,
                          f"{len(std)} values for the {len(mean)} of dataset.mean",
                          "valid: as many values as dataset.mean (both () for the dataset's own)")


def _check_batch_sizes(flat: dict[str, Any]) -> None:
    import jax

    n = jax.device_count()
    for key in ("batch_size", "eval_batch_size"):
        if key in flat and flat[key] % n:
            raise ConfigError(f"config.{key}", flat[key],
                              f"{key} {flat[key]} is not divisible by the device count {n}",
                              f"valid: a multiple of {n}")


def _check_schedule_fits(config: Any) -> None:
    optim = config.get("optim")
    if optim is None or not isinstance(optim.get("schedule"), str):
        return
    name, kwargs = registry.parse_spec(optim.schedule)
    final_lr = kwargs.get("final_lr", 0.0)
    if name == "cosine" and final_lr > optim.get("lr", math.inf):
        raise ConfigError("config.optim.schedule", optim.schedule,
                          f"final_lr {final_lr} is above lr {optim.lr}",
                          "valid: final_lr ≤ config.optim.lr")


# ----------------------------------------------------------------------------- shapes


def blame_model_key(model: Any, message: str) -> str:
    """The model key a shape error most likely concerns: the first field whose name or value
    appears in ``message``; the section itself otherwise."""
    for field, value in model.items():
        if field not in ("name", *schema.MODEL_BUILD_KEYS) and (f"{field}" in message or
                                (isinstance(value, str) and value and value in message)):
            return f"config.model.{field}"
    return "config.model"


def abstract_init(init: Callable[[], Any], model_config: Any) -> Any:
    """``jax.eval_shape(init)`` with any error turned into a :class:`ConfigError` naming the
    model key concerned: traced, not compiled, so a bad depth or a group count that does not
    divide the channels is reported in well under a second."""
    import jax

    try:
        return jax.eval_shape(init)
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001  (any trace-time failure is the config's)
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        key = blame_model_key(model_config, message)
        value = model_config[key.rsplit(".", 1)[1]] if key != "config.model" else dict(
            model_config)
        raise ConfigError(key, value, f"the model cannot be built: {message}",
                          "valid: a value the model accepts (see its docstring)") from e


def resolve_workdir(workdir: str | None) -> str:
    """The absolute workdir: ``~`` expanded; empty refused (it would train into the current
    directory)."""
    import os

    if workdir is None or not workdir.strip():
        raise ConfigError("--workdir", workdir or "", "empty",
                          "valid: a directory path for checkpoints and metrics")
    path = os.path.abspath(os.path.expanduser(workdir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError("--workdir", workdir, "exists and is not a directory",
                          "valid: a directory path")
    return path
