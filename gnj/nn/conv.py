"""Convolution and dense layers, registered by name in ``gnj.registry.CONVS``.

Every conv factory is called like ``flax.linen.Conv`` (``features, kernel_size, strides,
padding, use_bias, kernel_init, bias_init, feature_group_count, name``) and the module is
called as ``conv(x)``. Weight-reparametrised convs (weight centring, scaled weight
standardisation, weight norm) register here too, so any model can use them through
``model.conv="..."``.

Padding is explicit (PyTorch's symmetric ``padding=k//2``), never 'SAME', so strided convs
match the references exactly.

Reparametrised convs store the raw kernel ``kernel`` (shape ``(kh, kw, in/groups, out)``) and
recompute the effective kernel from it at every call. A *filter* is one output channel, i.e.
one slice ``kernel[..., f]``; its fan-in is ``kh·kw·in/groups``. With ``kernel_size=()`` they
are dense layers (kernel ``(in, out)``, ``y = x·W + b``), reparametrised the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gnj.nn import onednn_conv
from gnj.registry import CONVS

Dtype = Any
PaddingLike = str | int | Sequence[int | tuple[int, int]]

#: √(2π/(π−1)) = 1/std(relu(z)), z ~ N(0, 1): the ReLU gain of NF-nets' scaled WS.
RELU_SWS_GAIN = math.sqrt(2 * math.pi / (math.pi - 1))


def torch_padding(kernel_size: int, padding: int | None = None) -> tuple[tuple[int, int], ...]:
    """PyTorch's symmetric padding as Flax's explicit pairs for a square kernel."""
    p = kernel_size // 2 if padding is None else padding
    return ((p, p), (p, p))


def _is_nhwc(dimension_numbers: Any, n: int) -> bool:
    """Whether ``dimension_numbers`` are channels-last input/output and (*spatial, I, O) kernel."""
    if dimension_numbers is None:
        return False
    dn = jax.lax.conv_dimension_numbers((1,) * (n + 2), (1,) * (n + 2), dimension_numbers)
    return (tuple(dn.lhs_spec) == (0, n + 1, *range(1, n + 1))
            and tuple(dn.rhs_spec) == (n + 1, n, *range(n))
            and tuple(dn.out_spec) == (0, n + 1, *range(1, n + 1)))


def patch_conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
               padding: Sequence[tuple[int, int]], precision: Any = None) -> jax.Array:
    """Channels-last convolution as one matmul over explicit patches (im2col).

    y[n, o…, j] = Σ_{t, i} xpad[n, s·o + t, i] · W[t, i, j] over the kernel taps t: the taps'
    strided slices of the padded input are concatenated along channels (tap-major, like the
    kernel's (*spatial, I) flattening) and multiplied by W reshaped to (taps·I, O).
    """
    n = kernel.ndim - 2
    xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    out = [(xp.shape[1 + d] - kernel.shape[d]) // strides[d] + 1 for d in range(n)]
    taps = []
    for tap in np.ndindex(*kernel.shape[:n]):
        index = tuple(slice(t, t + strides[d] * (out[d] - 1) + 1, strides[d])
                      for d, t in enumerate(tap))
        taps.append(xp[(slice(None), *index, slice(None))])
    cols = jnp.concatenate(taps, axis=-1)
    w = jnp.reshape(kernel, (-1, kernel.shape[-1]))
    return jax.lax.dot_general(cols, w, (((cols.ndim - 1,), (0,)), ((), ())),
                               precision=precision)


def _onednn(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, preferred_element_type) -> jax.Array | None:
    """The conv through :mod:`gnj.nn.onednn_conv` if it is chosen and covers it, else None."""
    n = rhs.ndim - 2
    ones = (1,) * n
    if (n != 2 or not _is_nhwc(dimension_numbers, n) or lhs.dtype != rhs.dtype
            or tuple(lhs_dilation or ones) != ones or batch_group_count != 1
            or preferred_element_type not in (None, lhs.dtype)
            or onednn_conv.resolve_impl(lhs.dtype) != "onednn"):
        return None
    strides, dilation = tuple(window_strides), tuple(rhs_dilation or ones)
    pads = (jax.lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:n], strides, padding)
            if isinstance(padding, str) else [tuple(p) for p in padding])
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    if not onednn_conv.covered(lhs.shape, rhs.shape, lhs.dtype, strides, pads, dilation,
                               feature_group_count):
        return None
    return onednn_conv.conv(lhs, rhs, strides, pads, dilation, feature_group_count)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]],
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> jax.Array:
    """``jax.lax.conv_general_dilated``, through oneDNN on CPU where it applies.

    2-D channels-last convs (undilated input, no batch groups) go to the oneDNN primitives of
    :mod:`gnj.nn.onednn_conv` when :func:`gnj.nn.onednn_conv.resolve_impl` picks them (CPU,
    float32, ``$GNJ_CONV_IMPL`` not ``xla``) and oneDNN accepts the geometry. Otherwise XLA's
    conv, with maps smaller than the kernel going to :func:`patch_conv`:

    XLA:CPU's convolution is pathologically slow when an input spatial size is smaller than the
    kernel's (a 3×3 conv on 2×2 maps; docs/performance.md), so only that case is rerouted
    (undilated, ungrouped, channels-last); everything else, and every other backend's result up
    to float rounding, is ``lax.conv_general_dilated``. Autodiff goes through the pads, slices
    and the dot, whose gradients are plain XLA ops.
    """
    n = rhs.ndim - 2
    ones = (1,) * n
    y = _onednn(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                dimension_numbers, feature_group_count, batch_group_count,
                preferred_element_type)
    if y is not None:
        return y
    small = (_is_nhwc(dimension_numbers, n)
             and any(lhs.shape[1 + d] < rhs.shape[d] for d in range(n))
             and tuple(lhs_dilation or ones) == ones and tuple(rhs_dilation or ones) == ones
             and feature_group_count == 1 and batch_group_count == 1
             and preferred_element_type is None)
    if small:
        pads = (jax.lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:n], window_strides, padding)
                if isinstance(padding, str) else [tuple(p) for p in padding])
        return patch_conv(lhs, rhs, tuple(window_strides), pads, precision)
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)


@CONVS.register("plain")
class Conv(nn.Conv):
    """``flax.linen.Conv``, through :func:`conv_general_dilated` (same math; the pathological
    small-map case of XLA:CPU's convolution rerouted to an im2col matmul)."""

    conv_general_dilated: Callable | None = conv_general_dilated


# ------------------------------------------------------------------------------------------------
# Weight-reparametrised convs


def filter_axes(kernel: jax.Array) -> tuple[int, ...]:
    """The axes of one filter: all but the last (output) axis."""
    return tuple(range(kernel.ndim - 1))


def _tuple(v: int | Sequence[int], n: int) -> tuple[int, ...]:
    return (v,) * n if isinstance(v, int) else tuple(v)


class ReparamConv(nn.Module):
    """A convolution whose kernel is ``reparam(raw kernel)``; the base of the weight reparams.

    Fields mirror ``flax.linen.Conv`` (``padding``: 'SAME' / 'VALID', an int, or explicit
    ``(lo, hi)`` pairs per spatial axis). Subclasses implement :meth:`reparam`, which may create
    parameters of its own (gains).
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] = 1
    padding: PaddingLike = "SAME"
    input_dilation: int | Sequence[int] = 1
    kernel_dilation: int | Sequence[int] = 1
    feature_group_count: int = 1
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: Any = None
    kernel_init: Callable = nn.linear.default_kernel_init
    bias_init: Callable = nn.initializers.zeros

    def reparam(self, kernel: jax.Array) -> jax.Array:
        raise NotImplementedError

    def _where(self) -> str:
        path = "/".join(str(p) for p in self.path) if self.scope is not None else ""
        return f"{type(self).__name__} {path!r}" if path else type(self).__name__

    def _padding(self, n: int) -> str | list[tuple[int, int]]:
        pad = self.padding
        if isinstance(pad, str):
            if pad.upper() not in ("SAME", "VALID", "SAME_LOWER"):
                raise ValueError(f"{self._where()}: padding {pad!r}; valid: 'SAME', 'VALID', "
                                 "'SAME_LOWER', an int or (lo, hi) pairs")
            return pad.upper()
        if isinstance(pad, int):
            return [(pad, pad)] * n
        pairs = [(p, p) if isinstance(p, int) else tuple(p) for p in pad]
        if len(pairs) != n:
            raise ValueError(f"{self._where()}: padding {pad!r} has {len(pairs)} entries for "
                             f"{n} spatial axes")
        return pairs

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ks = _tuple(self.kernel_size, 1) if isinstance(self.kernel_size, int) else tuple(
            self.kernel_size)
        n = len(ks)
        if x.ndim != n + 2:
            raise ValueError(f"{self._where()}: kernel_size {ks} needs input with {n + 2} axes "
                             f"(N, {n} spatial, C); got shape {x.shape}")
        cin, groups = x.shape[-1], self.feature_group_count
        if groups < 1 or cin % groups or self.features % groups:
            raise ValueError(
                f"{self._where()}: feature_group_count={groups} must divide both the {cin} input "
                f"channels and the {self.features} output features")
        if n == 0 and groups != 1:
            raise ValueError(f"{self._where()}: a dense layer (kernel_size=()) has no groups; "
                             f"got feature_group_count={groups}")
        raw = self.param("kernel", self.kernel_init, ks + (cin // groups, self.features),
                         self.param_dtype)
        kernel = self.reparam(raw)
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if n == 0:
            y = jnp.dot(x, kernel, precision=self.precision)
        else:
            dn = jax.lax.ConvDimensionNumbers(
                lhs_spec=(0, n + 1, *range(1, n + 1)),
                rhs_spec=(n + 1, n, *range(n)),
                out_spec=(0, n + 1, *range(1, n + 1)))
            y = conv_general_dilated(
                x, kernel, window_strides=_tuple(self.strides, n), padding=self._padding(n),
                lhs_dilation=_tuple(self.input_dilation, n),
                rhs_dilation=_tuple(self.kernel_dilation, n), dimension_numbers=dn,
                feature_group_count=groups, precision=self.precision)
        return y if bias is None else y + bias


@CONVS.register("centered")
class CenteredConv(ReparamConv):
    """Weight centring: W_f ← W_f − mean(W_f) per filter, at every call
    (docs/references.md#weight-centring)."""

    def reparam(self, kernel: jax.Array) -> jax.Array:
        return kernel - jnp.mean(kernel, filter_axes(kernel), keepdims=True)


@CONVS.register("normed")
class NormedConv(ReparamConv):
    """Weight standardisation with a fan-in gain: W_f ← (W_f − μ_f)·gain/(√n·s_f).

    μ_f and s_f are the mean and the *unbiased* (torch.std) standard deviation of filter f, n its
    fan-in, gain = √2; no eps (docs/references.md#weight-centring).
    """

    gain: float = math.sqrt(2.0)

    def reparam(self, kernel: jax.Array) -> jax.Array:
        axes = filter_axes(kernel)
        n = math.prod(kernel.shape[:-1])
        centred = kernel - jnp.mean(kernel, axes, keepdims=True)
        std = jnp.sqrt(jnp.sum(jnp.square(centred), axes, keepdims=True) / (n - 1))
        return centred * (self.gain / math.sqrt(n)) / std


@CONVS.register("sws")
class ScaledStdConv(ReparamConv):
    """Scaled weight standardisation: W_f ← gain·g_f·(W_f − μ_f)/((σ_f + eps)·√n).

    As NF-nets' ``ScaledStdConv2d`` (docs/references.md#scaled-ws-weight-norm): σ_f the *biased*
    std of filter f, eps = 1e-5 added to σ (not under the root), n the fan-in, gain =
    √(2π/(π−1)) (the ReLU gain), g (param ``g``) a learnable per-filter gain, init 1.
    """

    gain: float = RELU_SWS_GAIN
    epsilon: float = 1e-5

    def reparam(self, kernel: jax.Array) -> jax.Array:
        axes = filter_axes(kernel)
        n = math.prod(kernel.shape[:-1])
        centred = kernel - jnp.mean(kernel, axes, keepdims=True)
        std = jnp.sqrt(jnp.mean(jnp.square(centred), axes, keepdims=True))
        g = self.param("g", nn.initializers.ones, (self.features,), self.param_dtype)
        return centred / (std + self.epsilon) * (g * (self.gain / math.sqrt(n)))


_WN_VARIANTS = ("unit", "torch")


@CONVS.register("weight_norm")
class WeightNormConv(ReparamConv):
    """Weight normalization (Salimans & Kingma 2016): W_f ← g_f·W_f/(‖W_f‖₂ + eps) per filter.

    Two variants, by ``variant``:

    - ``"unit"`` (default; docs/references.md#scaled-ws-weight-norm): g init 1 and eps = 1e-5, so
      the initial effective filters have unit norm; usually paired with the scaled ReLU
      ``act="wn_scaled_relu"`` and no norm.
    - ``"torch"`` (PyTorch ``nn.utils.weight_norm(dim=0)``; also registered as
      ``weight_norm_torch``): g initialised to ‖W_f‖ of the initial kernel, so the initial
      effective kernel equals the initialised one, and eps = 0.

    ``epsilon=None`` picks the variant's eps. The gain is the parameter ``g`` (one per filter).
    """

    variant: str = "unit"
    epsilon: float | None = None

    def reparam(self, kernel: jax.Array) -> jax.Array:
        if self.variant not in _WN_VARIANTS:
            raise ValueError(f"{self._where()}: variant {self.variant!r}; valid: {_WN_VARIANTS}")
        torch_style = self.variant == "torch"
        eps = (0.0 if torch_style else 1e-5) if self.epsilon is None else self.epsilon
        norm = jnp.sqrt(jnp.sum(jnp.square(kernel), filter_axes(kernel)))
        if torch_style:
            g = self.param("g", lambda _: norm.astype(self.param_dtype))
        else:
            g = self.param("g", nn.initializers.ones, (self.features,), self.param_dtype)
        return kernel * (g / (norm + eps))


@CONVS.register("weight_norm_torch")
class WeightNormConvTorch(WeightNormConv):
    """:class:`WeightNormConv`, ``variant="torch"``: ``nn.utils.weight_norm``, g = ‖W‖ at init."""

    variant: str = "torch"


CONVS.alias({
    "naive": "plain", "conv": "plain",
    "weight_centered": "centered", "wc": "centered",
    "wn_chen": "normed",
    "scaled_ws": "sws",
})
