"""Convolution and dense layers, registered by name in ``gnj.registry.CONVS``.

Every conv factory is called like ``flax.linen.Conv`` (``features, kernel_size, strides,
padding, use_bias, kernel_init, bias_init, feature_group_count, name``) and the module is
called as ``conv(x)``. Weight-reparametrised convs (weight centring, scaled weight
standardisation, weight norm) register here too, so any model can use them through
``model.conv="..."``.

Padding is explicit (PyTorch's symmetric ``padding=k//2``), never 'SAME', so strided convs
match the references exactly.
"""

from __future__ import annotations

import flax.linen as nn

from gnj.registry import CONVS


def torch_padding(kernel_size: int, padding: int | None = None) -> tuple[tuple[int, int], ...]:
    """PyTorch's symmetric padding as Flax's explicit pairs for a square kernel."""
    p = kernel_size // 2 if padding is None else padding
    return ((p, p), (p, p))


@CONVS.register("plain", "naive", "conv")
class Conv(nn.Conv):
    """``flax.linen.Conv`` unchanged: the plain convolution."""
