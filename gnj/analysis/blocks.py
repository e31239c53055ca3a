"""Blocks of any model and their real inputs, found generically (no model-specific code).

A block is a submodule whose class sets ``is_block = True`` (``gnj.models.common.is_block``).
:func:`block_inputs` runs the model once under ``flax.linen.intercept_methods`` and records, for
every block call, its module path and the input it received. :func:`block_function` returns the
block as a function of its input, ``f_b(z)``, evaluated at the model's variables: the model is
re-run with an interceptor that substitutes ``z`` for that block's input and captures the block's
output (under ``jit`` the rest of the network is dead code and is removed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from gnj.models.common import is_block


def _path(module: nn.Module) -> str:
    return "/".join(module.scope.path) if module.scope is not None else module.name or ""


def block_inputs(model: nn.Module, variables: Any, x: jax.Array) -> dict[str, jax.Array]:
    """``{block path: block input}`` in call order, from one eval-mode forward pass."""
    found: dict[str, jax.Array] = {}

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and is_block(context.module):
            found.setdefault(_path(context.module), args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        model.apply(variables, x, train=False)
    return found


def block_function(model: nn.Module, variables: Any, x: jax.Array, name: str
                   ) -> Callable[[jax.Array], jax.Array]:
    """``z ↦ block(z)`` for the block at path ``name`` (the model input ``x`` fixes the rest)."""

    def f(z):
        captured = {}

        def substitute(next_fun, args, kwargs, context):
            if (context.method_name == "__call__" and is_block(context.module)
                    and _path(context.module) == name and "out" not in captured):
                captured["out"] = next_fun(z, *args[1:], **kwargs)
                return captured["out"]
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(substitute):
            model.apply(variables, x, train=False)
        return captured["out"]

    return f


def check_block(names: list[str], name: str) -> None:
    if name not in names:
        raise ValueError(f"unknown block {name!r}; valid blocks: {', '.join(names)}")
