"""Blocks of any model and their real inputs, found generically (no model-specific code).

A block is a submodule whose class sets ``is_block = True`` (``gnj.models.common.is_block``);
its ``__call__(x, train)`` maps the block input to the block output. Block names are module
paths (``"stage1_block0"``, ``"layer0"``, ``"features/stage2_block1"``); a module called more
than once gets ``"<path>#k"`` for its k-th extra call.

- :func:`find_blocks` runs the model once (eval mode) under ``flax.linen.intercept_methods`` and
  records, for every block call, its path, its real input, the other call arguments, its
  variables and an unbound copy of the module.
- :func:`block_function` gives the block as a function of its input, ``z ↦ f_b(z)``, by re-running
  the model with an interceptor that substitutes ``z`` for the block's input; the run stops as
  soon as the block has returned (nothing downstream is traced).
- :meth:`Block.apply` applies the unbound copy to its own variables directly. Two blocks with the
  same configuration are *equal* modules, so a ``jit`` keyed on the module compiles once per
  distinct block (a ResNet-56 has 6 distinct blocks among its 27) — what the estimators use.

Everything is eval mode (``train=False``): BatchNorm uses its running statistics, so the map of
one sample does not depend on the others and per-sample Jacobians are well defined.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from gnj.models.common import is_block


@dataclasses.dataclass(frozen=True)
class Block:
    """One block call of a forward pass.

    Attributes:
      name: the module path (plus ``#k`` for repeated calls of one module).
      module: an unbound copy of the block module (hashable; equal for equal configurations).
      variables: the block's own variables (every collection it has).
      input: the real input the block received, batched like the model input.
      args: the call's remaining positional arguments (e.g. ``train``).
      kwargs: the call's keyword arguments.
    """

    name: str
    module: nn.Module
    variables: Any
    input: jax.Array
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)

    def apply(self, variables: Any, z: jax.Array) -> jax.Array:
        """The block at ``variables`` applied to a batched input ``z``."""
        return self.module.apply(variables, z, *self.args, **self.kwargs)

    def function(self) -> Callable[[jax.Array], jax.Array]:
        """``z ↦ block(z)`` at the recorded variables (batched ``z``)."""
        return lambda z: self.apply(self.variables, z)


def _path(module: nn.Module) -> str:
    if module.scope is None:
        return module.name or ""
    return "/".join(str(p) for p in module.scope.path)


class _Namer:
    """Unique names per call: the path, then ``path#1``, ``path#2`` for repeated calls."""

    def __init__(self):
        self.seen: dict[str, int] = {}

    def __call__(self, module: nn.Module) -> str:
        path = _path(module)
        k = self.seen.get(path, 0)
        self.seen[path] = k + 1
        return path if k == 0 else f"{path}#{k}"


def _is_block_call(context: Any) -> bool:
    return context.method_name == "__call__" and is_block(context.module)


def find_blocks(model: nn.Module, variables: Any, x: jax.Array) -> dict[str, Block]:
    """Every block call of one eval-mode forward pass at ``x``, in call order."""
    found: dict[str, Block] = {}
    namer = _Namer()

    def record(next_fun, args, kwargs, context):
        if _is_block_call(context):
            module = context.module
            name = namer(module)
            found[name] = Block(name=name, module=module.clone(parent=None, name=None),
                                variables=module.variables, input=args[0],
                                args=tuple(args[1:]), kwargs=dict(kwargs))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        model.apply(variables, x, train=False)
    return found


def block_inputs(model: nn.Module, variables: Any, x: jax.Array) -> dict[str, jax.Array]:
    """``{block name: real block input}`` in call order, from one eval-mode forward pass."""
    return {name: b.input for name, b in find_blocks(model, variables, x).items()}


def check_block(names: list[str], name: str, model: nn.Module | None = None) -> None:
    """ValueError naming the valid blocks unless ``name`` is one of ``names``."""
    if name not in names:
        where = f" of {type(model).__name__}" if model is not None else ""
        valid = ", ".join(names) if names else "none (no module has is_block = True)"
        raise ValueError(f"unknown block {name!r}{where}; valid blocks: {valid}")


def get_block(model: nn.Module, variables: Any, x: jax.Array, name: str) -> Block:
    """The block called ``name`` (ValueError listing the valid names otherwise)."""
    found = find_blocks(model, variables, x)
    check_block(list(found), name, model)
    return found[name]


class _Stop(Exception):  # noqa: N818 — control flow, not an error
    def __init__(self, out):
        super().__init__("block output captured")
        self.out = out


def block_function(model: nn.Module, variables: Any, x: jax.Array, name: str
                   ) -> Callable[[jax.Array], jax.Array]:
    """``z ↦ block(z)`` for the block called ``name``, through the model itself.

    ``x`` (any model input, e.g. one sample) drives the model up to the block; the block's input
    is replaced by ``z`` and the run stops when the block returns. Works for any block, also one
    that reads state outside its own scope. Calling the function with a name the model does not
    have raises a ValueError listing the valid block names.
    """

    def f(z: jax.Array) -> jax.Array:
        namer = _Namer()

        def substitute(next_fun, args, kwargs, context):
            if _is_block_call(context) and namer(context.module) == name:
                raise _Stop(next_fun(z, *args[1:], **kwargs))
            return next_fun(*args, **kwargs)

        try:
            with nn.intercept_methods(substitute):
                model.apply(variables, x, train=False)
        except _Stop as stop:
            return stop.out
        names = []
        for path, k in namer.seen.items():
            names += [path] + [f"{path}#{i}" for i in range(1, k)]
        check_block(names, name, model)
        raise AssertionError("unreachable")

    return f


def per_sample(f: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    """The per-sample map ``z ↦ f(z[None])[0]`` of a batched map ``f``."""
    return lambda z: f(z[None])[0]
