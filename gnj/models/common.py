"""Shared plumbing for models: inits and norms from specs, PyTorch-style convs and dense
layers, pooling, the block marker.

A model never imports a specific layer: it holds spec strings (``norm="group(groups=8)"``)
and resolves them through the registries, once, into a ``gnj.models.layers.Layers`` bundle.
Modules that are *blocks* (the unit whose Jacobian the analysis takes, e.g. a residual block)
set ``is_block = True``; the analysis finds them by that marker, with no model-specific code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.nn import activations, inits
from gnj.registry import CONVS, INITS, NORMS


def make_norm(spec: str, name: str | None = None, **kwargs: Any) -> nn.Module:
    """A norm module from its spec, e.g. ``make_norm("batch", "bn1")``."""
    return NORMS.lookup(spec, **kwargs)(name=name)


def make_init(spec: str, act: str | None = None, gain: float | None = None) -> Callable:
    """Kernel initializer from its spec; the gain is ``gain``, else that of activation ``act``
    (1 without either); a gain written in the spec wins over both."""
    default_gain = gain if gain is not None else (activations.gain(act) if act else 1.0)
    return INITS.lookup(spec, gain=default_gain)()


def conv(
    conv: str | Callable[..., nn.Module],
    features: int,
    kernel_size: int,
    stride: int = 1,
    *,
    padding: int | None = None,
    use_bias: bool = False,
    kernel_init: Callable | None = None,
    groups: int = 1,
    name: str | None = None,
) -> nn.Module:
    """A square conv with PyTorch padding (``k//2`` unless given): ``conv`` is a conv spec
    (``"plain"``, ``"sws"``, ...) or a factory already looked up in ``CONVS``.

    The bias, when used, gets PyTorch's default U(±1/√fan_in) init.
    """
    from gnj.nn.conv import torch_padding

    kwargs: dict[str, Any] = dict(
        features=features,
        kernel_size=(kernel_size, kernel_size),
        strides=(stride, stride),
        padding=torch_padding(kernel_size, padding),
        use_bias=use_bias,
        feature_group_count=groups,
        name=name,
    )
    if kernel_init is not None:
        kwargs["kernel_init"] = kernel_init
    if use_bias:
        kwargs["bias_init"] = _lazy_torch_bias(kernel_size * kernel_size)
    return (CONVS.lookup(conv) if isinstance(conv, str) else conv)(**kwargs)


def _lazy_torch_bias(receptive: int) -> Callable:
    """Bias init U(±1/√fan_in) where fan_in = receptive × in_channels, known only at init.

    Flax gives the bias init only the bias shape, so in_channels is not visible; PyTorch
    uses it, so we approximate with receptive × out_channels / groups, which matches for the
    common case in == out. Exactness of bias init is not relied on by any experiment.
    """

    def init(key, shape, dtype=jnp.float32):
        fan_in = receptive * shape[-1]
        return inits.torch_default_bias(fan_in)(key, shape, dtype)

    return init


def dense(
    features: int,
    *,
    kernel_init: Callable | None = None,
    use_bias: bool = True,
    bias_init: Callable | None = None,
    name: str | None = None,
) -> nn.Dense:
    """``nn.Dense`` with PyTorch's default init unless an init is given."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        kernel_init=kernel_init or inits.torch_default(),
        bias_init=bias_init or _dense_torch_bias,
        name=name,
    )


def _dense_torch_bias(key, shape, dtype=jnp.float32):
    # Bias init of nn.Linear needs fan_in, which Flax does not pass; U(±1/√out) is used instead
    # (see _lazy_torch_bias); exactness of the bias init is not relied on by any experiment.
    return inits.torch_default_bias(shape[-1])(key, shape, dtype)


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over the spatial axes of an NHWC tensor."""
    return jnp.mean(x, axis=(1, 2))


def is_block(module: nn.Module) -> bool:
    """Whether ``module`` is marked as a block for block-wise analysis."""
    return bool(getattr(type(module), "is_block", False))
