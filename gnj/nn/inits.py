"""Weight initializers, registered by name in ``gnj.registry.INITS``.

Every registered entry is a factory ``factory(gain=None, **kwargs) -> initializer`` where the
initializer has Flax's signature ``init(key, shape, dtype) -> array``. Kernels are Flax-shaped:
dense ``(in, out)``, conv ``(kh, kw, in/groups, out)``. ``gain=None`` means "the gain of the
layer's nonlinearity", which the model fills in from ``gnj.nn.activations.gain``.

Follows the gain table and fan conventions of GNEDNN_release ``ops/initialization.py``
(REFERENCE.md §1.6) and PyTorch's ``nn.init``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from gnj.registry import INITS

Initializer = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) of a Flax kernel: receptive field × input / output channels."""
    if len(shape) < 2:
        raise ValueError(f"fan of a kernel needs at least 2 dims, got shape {tuple(shape)}")
    receptive = math.prod(shape[:-2])
    return receptive * shape[-2], receptive * shape[-1]


def _resolve_gain(gain: float | None) -> float:
    return 1.0 if gain is None else float(gain)


@INITS.register("kaiming_normal", "kaiming_norm", "he_normal")
def kaiming_normal(gain: float | None = None, mode: str = "fan_in") -> Initializer:
    """N(0, gain/√fan): ``mode`` is ``fan_in`` or ``fan_out`` (PyTorch ``kaiming_normal_``)."""
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming_normal mode {mode!r}; valid: fan_in, fan_out")
    g = _resolve_gain(gain)

    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = fans(shape)
        std = g / math.sqrt(fan_in if mode == "fan_in" else fan_out)
        return std * jax.random.normal(key, shape, dtype)

    return init


@INITS.register("torch_default", "torch_linear_default")
def torch_default(gain: float | None = None) -> Initializer:
    """PyTorch's default for ``nn.Linear``/``nn.Conv2d`` weights and biases: U(±1/√fan_in).

    (kaiming_uniform with a=√5 gives bound √6/√(6·fan_in) = 1/√fan_in.) ``gain`` is ignored:
    this is the framework default, not a gain-matched init.
    """
    del gain

    def init(key, shape, dtype=jnp.float32):
        fan_in, _ = fans(shape)
        bound = 1.0 / math.sqrt(fan_in)
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_default_bias(fan_in: int) -> Initializer:
    """PyTorch's default bias init of a layer with the given fan_in: U(±1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


@INITS.register("zeros")
def zeros(gain: float | None = None) -> Initializer:
    """All zeros (Fixup's last conv and classifier, ConstNet's block convs)."""
    del gain
    return jax.nn.initializers.zeros
