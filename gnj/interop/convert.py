"""PyTorch state dicts → gnj variables, through one name map per model family.

``from_torch(model, variables, state_dict)`` returns ``variables`` (the gnj model's ``params``,
``batch_stats`` and ``backward_state``) with every tensor replaced by the matching tensor of a
state dict laid out as a PyTorch module (its attribute names; ``num_batches_tracked`` is
dropped). A family's map is found by the model's class name in :data:`NAME_MAPS`, where each
paper's ``gnj/proj/<paper>/convert.py`` registers the maps of its reference code's layouts
(docs/parity.md: how they are checked); the torchvision ResNets and MobileNetV2 go through
:mod:`gnj.interop.torchvision`. Tensor layouts:

- conv weight (O, I/g, kh, kw) → ``kernel`` (kh, kw, I/g, O); Linear weight (out, in) →
  ``kernel`` (in, out) (``NameMap.transforms`` for layouts a transpose cannot express);
- norm weight / gamma → ``scale``, bias / beta → ``bias``, running_mean / moving_mean →
  ``batch_stats/…/mean``, running_var / moving_var → ``var``; FRN ``eps`` and TLU ``tau`` keep
  their names; the streams of a norm with forward and backward state, ``m`` / ``var`` →
  ``batch_stats`` ``mean`` / ``var`` and ``u`` / ``v`` → ``backward_state`` ``u`` / ``v``;
  per-channel (1, C, 1, 1) and scalar (1,) tensors are reshaped to gnj's (C,) / ().

Tensors the reference creates but never uses are listed per family (``NameMap.unused``) and
skipped. Every gnj tensor must be covered and every other torch tensor used, with matching
shapes; otherwise a ValueError lists what is missing, unexpected or mis-shaped.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gnj.interop import torchvision
from gnj.registry import Registry

LEAVES = {"gamma": ("params", "scale"), "beta": ("params", "bias"), "bias": ("params", "bias"),
          "running_mean": ("batch_stats", "mean"), "moving_mean": ("batch_stats", "mean"),
          "running_var": ("batch_stats", "var"), "moving_var": ("batch_stats", "var"),
          "eps": ("params", "eps"), "tau": ("params", "tau"),
          # the forward (m, var) and backward (u, v) streams of a streaming norm
          "m": ("batch_stats", "mean"), "var": ("batch_stats", "var"),
          "u": ("backward_state", "u"), "v": ("backward_state", "v")}
IGNORED = re.compile(r".*\.num_batches_tracked$")


@dataclasses.dataclass
class NameMap:
    """How one reference module's state dict lands in a gnj model.

    ``modules``: torch module prefix → gnj module path (``a/b``); a tensor ``prefix.leaf`` goes to
    that module's leaf by :data:`LEAVES` (``weight`` → ``kernel``, else ``scale``).
    ``tensors``: full torch key → ``collection/path/leaf`` for tensors with their own name.
    ``unused``: regexes of tensors the reference creates but never uses in its forward.
    ``transforms``: full torch key → function (array, target shape) → array, for layouts that a
    transpose cannot express.
    """

    modules: dict[str, str] = dataclasses.field(default_factory=dict)
    tensors: dict[str, str] = dataclasses.field(default_factory=dict)
    unused: list[str] = dataclasses.field(default_factory=list)
    transforms: dict[str, Callable[[np.ndarray, tuple[int, ...]], np.ndarray]] = (
        dataclasses.field(default_factory=dict))

    def norm(self, torch_prefix: str, gnj_path: str) -> None:
        self.modules[torch_prefix] = gnj_path

    def is_unused(self, key: str) -> bool:
        return bool(IGNORED.fullmatch(key)) or any(re.fullmatch(p, key) for p in self.unused)


def _target(key: str, name_map: NameMap, variables: Mapping[str, Any]
            ) -> tuple[str, list[str]] | None:
    if key in name_map.tensors:
        collection, *path = name_map.tensors[key].split("/")
        return collection, path
    prefix, _, leaf = key.rpartition(".")
    if prefix not in name_map.modules:
        return None
    module = name_map.modules[prefix].split("/")
    if leaf == "weight":
        has_kernel = torchvision.get_leaf(variables.get("params", {}),
                                          (*module, "kernel")) is not None
        return "params", [*module, "kernel" if has_kernel else "scale"]
    if leaf not in LEAVES:
        return None
    collection, name = LEAVES[leaf]
    return collection, [*module, name]


def _layout(value: np.ndarray, shape: tuple[int, ...], leaf: str) -> np.ndarray:
    if value.ndim == 4 and len(shape) == 4:
        return np.transpose(value, (2, 3, 1, 0))  # OIHW → HWIO
    if value.ndim == 2 and len(shape) == 2 and leaf == "kernel":
        return value.T  # (out, in) → (in, out)
    if value.size == int(np.prod(shape)):
        return np.reshape(value, shape)  # (1, C, 1, 1) → (C,), (1,) → ()
    return value


def convert(variables: Mapping[str, Any], state_dict: Mapping[str, Any], name_map: NameMap,
            label: str) -> dict[str, Any]:
    """``variables`` with every tensor taken from ``state_dict`` through ``name_map``."""
    out = {col: torchvision.plain_tree(v) for col, v in variables.items()}
    covered: set[tuple[str, ...]] = set()
    unexpected, bad_shape = [], []
    for key, value in state_dict.items():
        if name_map.is_unused(key):
            continue
        target = _target(key, name_map, out)
        current = (None if target is None
                   else torchvision.get_leaf(out.get(target[0], {}), tuple(target[1])))
        if current is None:
            where = "" if target is None else f" (→ {target[0]}/{'/'.join(target[1])})"
            unexpected.append(key + where)
            continue
        collection, path = target
        shape = tuple(np.shape(current))
        value = np.asarray(value)
        new = (name_map.transforms[key](value, shape) if key in name_map.transforms
               else _layout(value, shape, path[-1]))
        if tuple(new.shape) != shape:
            bad_shape.append(f"{key} {tuple(value.shape)} vs {collection}/{'/'.join(path)} "
                             f"{shape}")
            continue
        torchvision.set_leaf(out[collection], tuple(path),
                             np.asarray(new, dtype=np.asarray(current).dtype))
        covered.add((collection, *path))
    torchvision.check_fit(f"convert ({label})", out, covered, unexpected, bad_shape)
    return out


# ------------------------------------------------------------------------------ families


@dataclasses.dataclass(frozen=True)
class NameMapHook:
    """A registered name map: for gnj models of class ``family`` for which ``applies(model)``
    is true (one family may have several layouts, e.g. by shortcut kind), ``build(model)``."""

    family: str
    build: Callable[[Any], NameMap]
    applies: Callable[[Any], bool] = lambda model: True


#: every paper's name maps, by a unique name (``<paper>.<layout>``); filled on first lookup by
#: importing ``gnj.proj``.
NAME_MAPS = Registry("torch name map", ("gnj.proj",))


def register_name_map(name: str, family: str, applies: Callable[[Any], bool] | None = None
                      ) -> Callable[[Callable[[Any], NameMap]], Callable[[Any], NameMap]]:
    """Decorator: ``@register_name_map("paper.layout", "ModelClass")`` on ``build(model)``."""

    def decorator(build: Callable[[Any], NameMap]) -> Callable[[Any], NameMap]:
        hook = NameMapHook(family, build) if applies is None else NameMapHook(family, build,
                                                                                applies)
        NAME_MAPS.register(name)(hook)
        return build

    return decorator


def name_map(model: Any) -> NameMap:
    """The family's name map for a gnj model instance (ValueError for families without one)."""
    family = type(model).__name__
    hooks = [NAME_MAPS.get(n) for n in NAME_MAPS.names()]
    for hook in hooks:
        if hook.family == family and hook.applies(model):
            return hook.build(model)
    families = sorted({hook.family for hook in hooks})
    raise ValueError(f"convert: no reference name map for {family}; supported: "
                     f"{', '.join(families)}, and the torchvision ResNets / MobileNetV2 "
                     "(gnj.interop.torchvision)")


def from_torch(model: Any, variables: Mapping[str, Any], state_dict: Mapping[str, Any]
               ) -> dict[str, Any]:
    """``variables`` of ``model`` filled from a reference-layout state dict (numpy arrays)."""
    state_dict = {k: np.asarray(v) for k, v in state_dict.items() if not IGNORED.fullmatch(k)}
    kind = torchvision.kind_of_model(model)
    if kind is not None:
        return torchvision.convert(variables, state_dict, kind)
    return convert(variables, state_dict, name_map(model), type(model).__name__)
