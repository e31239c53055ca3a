"""Activations, registered by name in ``gnj.registry.ACTIVATIONS``, and their init gains.

Every registered entry is a factory returning a Flax module called as ``act(x)``. Parameter-free
activations are wrapped in :class:`Elementwise`, so models treat all activations alike.
``gain(spec)`` is the gain table of GNEDNN_release ``ops/initialization.py`` (REFERENCE.md §1.6):
linear and tanh 1, relu/prelu/sprelu √2, leaky ReLU √(2/(1+s²)).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax

from gnj.registry import ACTIVATIONS, parse_spec


class Elementwise(nn.Module):
    """A parameter-free activation ``fn(x)`` as a module."""

    fn: Callable[[jax.Array], jax.Array]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fn(x)


@ACTIVATIONS.register("relu")
def relu() -> nn.Module:
    return Elementwise(jax.nn.relu)


@ACTIVATIONS.register("identity", "linear", "none")
def identity() -> nn.Module:
    return Elementwise(lambda x: x)


_GAINS: dict[str, Callable[[dict], float]] = {
    "identity": lambda kw: 1.0,
    "linear": lambda kw: 1.0,
    "none": lambda kw: 1.0,
    "tanh": lambda kw: 1.0,
    "relu": lambda kw: math.sqrt(2.0),
    "prelu": lambda kw: math.sqrt(2.0),
    "sprelu": lambda kw: math.sqrt(2.0),
    "leaky_relu": lambda kw: math.sqrt(2.0 / (1.0 + kw.get("negative_slope", 0.01) ** 2)),
}


def register_gain(name: str, fn: Callable[[dict], float]) -> None:
    """Declare the init gain of activation ``name`` as a function of its spec's kwargs."""
    _GAINS[name] = fn


def gain(spec: str) -> float:
    """Init gain matched to activation ``spec``; 1 for activations without an entry (selu...)."""
    name, kwargs = parse_spec(spec)
    ACTIVATIONS.get(name)  # unknown names raise with the valid list
    fn = _GAINS.get(name)
    return 1.0 if fn is None else float(fn(kwargs))
