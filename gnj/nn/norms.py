"""Activation normalization layers, registered by name in ``gnj.registry.NORMS``.

Protocol shared by every norm: a registered factory takes keyword options and returns a Flax
module called as ``norm(x, train)`` on channel-last input (``(N, C)`` or ``(N, H, W, C)``; any
number of spatial axes between the batch and the channel axis works). State that is not a
parameter (running statistics) lives in the ``batch_stats`` collection and is updated only when
``train`` is true and the module is not initializing. A class attribute ``needs_batch_stats``
says whether the norm couples the samples of a batch.

Conventions shared by every norm here (docs/norms.md has the full table):

- ``momentum`` is always the weight of the *new batch value* in the running average,
  ``r ← (1 − m)·r + m·batch`` (PyTorch's convention; a "keep 0.9" average is ``momentum=0.1``,
  docs/references.md#running-stats).
- Statistics are computed in at least float32 (float64 inputs stay float64) and the output is
  cast back to the input dtype. ``param_dtype`` is the dtype of parameters *and* running
  statistics (float32 by default; the float64 tests pass ``jnp.float64``).
- Affine parameters ``scale`` (γ, init ``scale_init``) and ``bias`` (β, init 0) are per channel.
- Bad options raise a ``ValueError`` naming the layer, the value and the channel / batch count,
  at the first call (init), never deep inside XLA.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.registry import NORMS

Dtype = Any

# ------------------------------------------------------------------------------------------------
# Helpers


def reduction_axes(x: jax.Array) -> tuple[int, ...]:
    """Every axis but the channel axis (the last)."""
    return tuple(range(x.ndim - 1))


def spatial_axes(x: jax.Array) -> tuple[int, ...]:
    """The axes between the batch axis (first) and the channel axis (last)."""
    return tuple(range(1, x.ndim - 1))


def p_grouping(width: int, p: float) -> int:
    """The group-count rule of ``p`` (docs/references.md#group-frn-evonorm): ``int(p)`` if p > 1
    else ⌈width·p⌉.

    p > 1 is the number of groups; p ≤ 1 is the inverse group size (p = 1: one channel per group,
    i.e. InstanceNorm; tiny p: one group, i.e. LayerNorm). The float product is rounded up as
    computed (no tolerance).
    """
    return int(p) if p > 1 else math.ceil(width * p)


def _label(module: nn.Module) -> str:
    """``"GroupNorm 'stage1_block0/norm1'"``: the class and where it sits in the model."""
    path = "/".join(str(p) for p in module.path) if module.scope is not None else ""
    return f"{type(module).__name__} {path!r}" if path else type(module).__name__


def _compute_dtype(x: jax.Array) -> Dtype:
    return jnp.promote_types(x.dtype, jnp.float32)


def _channels(module: nn.Module, x: jax.Array) -> int:
    if x.ndim < 2:
        raise ValueError(
            f"{_label(module)}: input of shape {x.shape} has no channel axis; expected "
            "channel-last (N, C) or (N, H, W, C)")
    return x.shape[-1]


def _spatial_size(module: nn.Module, x: jax.Array, minimum: int = 1) -> int:
    """H·W (product of the spatial axes); a ValueError when below ``minimum`` or absent."""
    size = math.prod(x.shape[1:-1])
    if x.ndim < 3 or size < minimum:
        raise ValueError(
            f"{_label(module)}: needs channel-last input with spatial axes of at least {minimum} "
            f"element(s) per channel, e.g. (N, H, W, C); got shape {x.shape}")
    return size


def _ema(var: nn.Variable, batch_value: jax.Array, momentum: float) -> None:
    var.value = (1 - momentum) * var.value + momentum * batch_value.astype(var.value.dtype)


def _running_statistic(module: nn.Module, name: str, init: Callable[..., jax.Array], c: int,
                       train: bool, batch_value: Callable[[], jax.Array]) -> jax.Array:
    """A per-channel statistic: ``batch_value()`` in training, folded into its running average
    ``batch_stats/<name>`` (EMA, ``module.momentum``, from ``init``) unless initializing; the
    running average in eval."""
    running = module.variable("batch_stats", name, init, (c,), module.param_dtype)
    if not train:
        return running.value
    value = batch_value()
    if not module.is_initializing():
        _ema(running, value, module.momentum)
    return value




def _moments(xf: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Mean and *biased* variance over ``axes`` (keepdims)."""
    mean = jnp.mean(xf, axes, keepdims=True)
    return mean, jnp.mean(jnp.square(xf - mean), axes, keepdims=True)


#: width of the wide view in :func:`channel_sum` (measured: docs/norms.md, "BatchNorm speed").
_SUM_WIDTH = 8192


def channel_sum(a: jax.Array) -> jax.Array:
    """Σ_m a[m, c] of a 2-d (M, C) array, as a matrix-vector product on a wide view.

    The rows are regrouped as (M/k, k·C) with k the largest divisor of M with k·C ≤ 8192, summed
    by ``ones(M/k) @ view`` (precision HIGHEST: no reduced-precision passes on accelerators)
    and the k partial rows of C added. Same sum, reassociated. On XLA:CPU this is 2–15× faster
    than ``a.sum(0)``, which reduces along the strided axis into only C outputs (docs/norms.md).
    """
    m, c = a.shape
    k = max(1, min(m, _SUM_WIDTH // c))
    while m % k:
        k -= 1
    ones = jnp.ones((m // k,), a.dtype)
    wide = jnp.dot(ones, a.reshape(m // k, k * c), precision=jax.lax.Precision.HIGHEST)
    return jnp.sum(wide.reshape(k, c), axis=0)


def _bn_forward(x, gamma, beta, eps):
    m = x.shape[0]
    mean = channel_sum(x) / m
    centred = x - mean
    var = channel_sum(jnp.square(centred)) / m
    rstd = jax.lax.rsqrt(var + eps)
    return centred * rstd * gamma + beta, mean, var, rstd


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x: jax.Array, gamma: jax.Array, beta: jax.Array,
                     eps: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training-mode BatchNorm of a 2-d (M, C) array: (γ·x̂ + β, μ_B, σ²_B).

    x̂ = (x − μ_B)/√(σ²_B + eps), with μ_B and σ²_B (biased, two-pass) over the M rows. The
    VJP is the closed form (Ioffe & Szegedy 2015, §3), g = ∂L/∂y, means over the M rows::

        ∂L/∂β = Σ g      ∂L/∂γ = Σ g·x̂      ∂L/∂x = γ/√(σ²_B + eps)·(g − mean(g) − x̂·mean(g·x̂))

    two channel sums and one elementwise pass, against the five reductions autodiff makes of
    the plain formula (same values up to float rounding; tested in float64 against
    ``jax.grad`` of it). μ_B, σ²_B feed only the running statistics: their cotangents are
    ignored. Reverse mode only (a ``custom_vjp``: ``jax.jvp`` / ``jacfwd`` through train-mode
    BatchNorm raise; eval mode is plain JAX).
    """
    return _bn_forward(x, gamma, beta, eps)[:3]


def _bn_fwd(x, gamma, beta, eps):
    y, mean, var, rstd = _bn_forward(x, gamma, beta, eps)
    return (y, mean, var), (x, mean, rstd, gamma)


def _bn_bwd(eps, residuals, cotangents):
    x, mean, rstd, gamma = residuals
    g = cotangents[0]
    m = x.shape[0]
    x_hat = (x - mean) * rstd
    sum_g, sum_gx = channel_sum(g), channel_sum(g * x_hat)
    dx = (gamma * rstd) * (g - sum_g / m - x_hat * (sum_gx / m))
    return dx, sum_gx.astype(gamma.dtype), sum_g.astype(gamma.dtype)


batch_norm_train.defvjp(_bn_fwd, _bn_bwd)


class _Affine(nn.Module):
    """Base with the per-channel affine ``y·γ + β`` shared by the norms."""

    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    scale_init: float = 1.0
    param_dtype: Dtype = jnp.float32

    def _scale_bias(self, shape: tuple[int, ...]) -> tuple[jax.Array | None, jax.Array | None]:
        """γ (``scale``) and β (``bias``) of ``shape``; None where disabled."""
        scale = (self.param("scale", nn.initializers.constant(self.scale_init), shape,
                            self.param_dtype) if self.use_scale else None)
        bias = (self.param("bias", nn.initializers.zeros, shape, self.param_dtype)
                if self.use_bias else None)
        return scale, bias

    def _affine(self, y: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        scale, bias = self._scale_bias(shape)
        if scale is not None:
            y = y * scale
        if bias is not None:
            y = y + bias
        return y


# ------------------------------------------------------------------------------------------------
# Identity


@NORMS.register("none")
class NoNorm(nn.Module):
    """The identity: ``y = x``."""

    needs_batch_stats: ClassVar[bool] = False

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        return x


# ------------------------------------------------------------------------------------------------
# Batch-coupled norms


_BN_CONVENTIONS = ("torch", "biased")


@NORMS.register("batch")
class BatchNorm(_Affine):
    """y = γ·(x − μ_B)/√(σ²_B + eps) + β over all axes but the channel; σ²_B biased.

    Two running-statistics conventions (docs/references.md#running-stats), chosen by ``convention``:

    - ``"torch"`` (default; PyTorch ``nn.BatchNorm2d``): running mean starts at 0, running
      variance at 1, and the running variance averages the *unbiased* batch variance.
    - ``"biased"``: the running variance averages the *biased* batch variance and the running
      mean starts at **one** (a convention some reference code uses; kept because it changes
      the eval output of briefly trained nets).

    Both update ``r ← (1 − m)·r + m·batch`` with ``momentum`` m = 0.1; eval uses the running
    statistics.
    """

    momentum: float = 0.1
    convention: str = "torch"

    needs_batch_stats: ClassVar[bool] = True

    def _biased(self) -> bool:
        if self.convention not in _BN_CONVENTIONS:
            raise ValueError(
                f"{_label(self)}: convention {self.convention!r}; valid: {_BN_CONVENTIONS}")
        return self.convention == "biased"

    def _running(self, c: int | tuple[int, ...]) -> tuple[nn.Variable, nn.Variable]:
        shape = (c,) if isinstance(c, int) else c
        mean_init = jnp.ones if self._biased() else jnp.zeros
        return (self.variable("batch_stats", "mean", mean_init, shape, self.param_dtype),
                self.variable("batch_stats", "var", jnp.ones, shape, self.param_dtype))

    def _update(self, ra_mean: nn.Variable, ra_var: nn.Variable, mean: jax.Array,
                var: jax.Array, n: int) -> None:
        """EMA update from batch mean and biased variance over n elements per channel."""
        if not self.is_initializing():
            running_var = var if self._biased() else var * (n / max(n - 1, 1))
            _ema(ra_mean, mean, self.momentum)
            _ema(ra_var, running_var, self.momentum)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c = _channels(self, x)
        ra_mean, ra_var = self._running(c)
        if not train:
            y = (x - ra_mean.value) * jax.lax.rsqrt(ra_var.value + self.epsilon)
            return self._affine(y, (c,)).astype(x.dtype)
        return self._train(x, c, ra_mean, ra_var)

    def _train(self, x: jax.Array, c: int, ra_mean: nn.Variable, ra_var: nn.Variable
               ) -> jax.Array:
        """The training-mode output; updates the running statistics unless initializing."""
        dt = jnp.promote_types(_compute_dtype(x), self.param_dtype)
        gamma, beta = self._scale_bias((c,))
        gamma = jnp.ones((c,), dt) if gamma is None else gamma
        beta = jnp.zeros((c,), dt) if beta is None else beta
        y, mean, var = batch_norm_train(x.reshape(-1, c).astype(dt), gamma.astype(dt),
                                        beta.astype(dt), self.epsilon)
        self._update(ra_mean, ra_var, mean, var, x.size // c)
        return y.reshape(x.shape).astype(x.dtype)


@NORMS.register("ghost_batch")
class GhostBatchNorm(BatchNorm):
    """BatchNorm whose training statistics are those of "ghost" batches of ``size`` samples.

    The batch (N, ..., C) is split into N/size consecutive groups; each group is normalised with
    its own mean and biased variance (Hoffer et al. 2017, "virtual" BN). Running statistics:
    the EMA (``momentum``, ``convention`` as in :class:`BatchNorm`) of the average over ghost
    batches of their mean and of their variance (unbiased within a ghost batch under the torch
    convention). Eval uses the running statistics, so any eval batch size works; ``size`` must
    divide the *training* batch.

    This is ghost BN as the method describes it, not a reshape that folds the ghost batches into
    channels (docs/references.md#moment-norms).
    """

    size: int = 32

    def _train(self, x: jax.Array, c: int, ra_mean: nn.Variable, ra_var: nn.Variable
               ) -> jax.Array:
        n = x.shape[0]
        if self.size < 1 or n % self.size:
            raise ValueError(
                f"{_label(self)}: ghost batch size {self.size} does not divide the batch of {n} "
                "samples; use a size that divides the training batch")
        xg = x.astype(_compute_dtype(x)).reshape((n // self.size, self.size) + x.shape[1:])
        mean, var = _moments(xg, tuple(range(1, xg.ndim - 1)))  # (G, 1, ..., C)
        y = ((xg - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
        self._update(ra_mean, ra_var, jnp.mean(mean.reshape(-1, c), 0),
                     jnp.mean(var.reshape(-1, c), 0), xg[0].size // c)
        return self._affine(y, (c,)).astype(x.dtype)


@NORMS.register("mean_only")
class MeanOnlyBatchNorm(nn.Module):
    """y = x − μ_B + β (no scaling; docs/references.md#moment-norms).

    Usually paired with ``weight_norm_torch`` convs (weight norm with mean-only BN). Running
    mean: EMA with PyTorch's momentum 0.1 starting at 0; eval subtracts it.
    """

    momentum: float = 0.1
    use_bias: bool = True
    param_dtype: Dtype = jnp.float32

    needs_batch_stats: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c = _channels(self, x)
        mean = _running_statistic(
            self, "mean", jnp.zeros, c, train,
            lambda: jnp.mean(x.astype(_compute_dtype(x)), reduction_axes(x)))
        y = x - mean
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        return y.astype(x.dtype)


class _MomentNorm(_Affine):
    """y = γ·x/(m_c + eps) + β with a batch moment m_c over all axes but the channel.

    docs/references.md#moment-norms: no centring; eps is added to the moment (not under a square
    root); the running moment (``batch_stats/moment``) is an EMA with momentum 0.1 starting at
    1; eval divides by ``running + eps``. Usually paired with ``centered`` convs.
    """

    momentum: float = 0.1

    needs_batch_stats: ClassVar[bool] = True

    @staticmethod
    def _moment(xf: jax.Array, axes: tuple[int, ...]) -> jax.Array:
        raise NotImplementedError

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c = _channels(self, x)
        moment = _running_statistic(
            self, "moment", jnp.ones, c, train,
            lambda: self._moment(x.astype(_compute_dtype(x)), reduction_axes(x)))
        y = x / (moment + self.epsilon)
        return self._affine(y, (c,)).astype(x.dtype)


@NORMS.register("smn")
class SecondMomentNorm(_MomentNorm):
    """Second-moment normalization (SMN): m_c = RMS_c = √(mean_{N,H,W} x²) (see _MomentNorm)."""

    @staticmethod
    def _moment(xf: jax.Array, axes: tuple[int, ...]) -> jax.Array:
        return jnp.sqrt(jnp.mean(jnp.square(xf), axes))


@NORMS.register("l1n")
class L1MomentNorm(_MomentNorm):
    """L1 moment normalization: m_c = mean_{N,H,W} |x| (see _MomentNorm)."""

    @staticmethod
    def _moment(xf: jax.Array, axes: tuple[int, ...]) -> jax.Array:
        return jnp.mean(jnp.abs(xf), axes)


@NORMS.register("variance")
class VarianceNorm(_Affine):
    """y = γ·x/√(σ²_B + eps) + β: divide by the batch variance, no centring.

    docs/references.md#group-frn-evonorm. σ²_B is the biased batch variance over all axes but
    the channel; running variance: EMA momentum 0.1 of the biased batch variance, starting at 1;
    eval uses it.
    """

    momentum: float = 0.1

    needs_batch_stats: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c = _channels(self, x)
        var = _running_statistic(self, "var", jnp.ones, c, train,
                                 lambda: _moments(x.astype(_compute_dtype(x)),
                                                  reduction_axes(x))[1].reshape(c))
        return self._affine(x * jax.lax.rsqrt(var + self.epsilon), (c,)).astype(x.dtype)


# ------------------------------------------------------------------------------------------------
# Per-sample norms


_LN_AFFINE = ("channel", "element", "none")


@NORMS.register("layer")
class LayerNorm(_Affine):
    """y = (x − μ)/√(σ² + eps)·γ + β with μ, σ² (biased) over (H, W, C) of each sample.

    ``affine="channel"`` (default): γ, β per channel (docs/references.md#group-frn-evonorm).
    ``affine="element"``: γ, β of shape (H, W, C), elementwise, created at the first call from
    the input's shape. ``affine="none"``: no affine. ``use_scale`` / ``use_bias`` switch γ / β
    off individually.
    """

    affine: str = "channel"

    needs_batch_stats: ClassVar[bool] = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        c = _channels(self, x)
        if self.affine not in _LN_AFFINE:
            raise ValueError(f"{_label(self)}: affine {self.affine!r}; valid: {_LN_AFFINE}")
        mean, var = _moments(x.astype(_compute_dtype(x)), tuple(range(1, x.ndim)))
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        if self.affine != "none":
            y = self._affine(y, (c,) if self.affine == "channel" else x.shape[1:])
        return y.astype(x.dtype)


@NORMS.register("instance")
class InstanceNorm(_Affine):
    """y = (x − μ)/√(σ² + eps)·γ + β with μ, σ² (biased) over (H, W) per sample and channel.

    As ``nn.InstanceNorm2d(affine=True)`` (docs/references.md#group-frn-evonorm). Needs spatial
    axes: (N, C) input raises a ValueError (the variance would be 0).
    """

    needs_batch_stats: ClassVar[bool] = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        c = _channels(self, x)
        _spatial_size(self, x)
        mean, var = _moments(x.astype(_compute_dtype(x)), spatial_axes(x))
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        return self._affine(y, (c,)).astype(x.dtype)


def _group_count(module: nn.Module, c: int, groups: int | None, p: float | None,
                 default: int = 32) -> int:
    """Resolve ``groups`` / ``p`` (:func:`p_grouping`) to a group count dividing c."""
    if groups is not None and p is not None:
        raise ValueError(f"{_label(module)}: give either groups ({groups}) or p ({p}), not both")
    if p is not None:
        if not p > 0:
            raise ValueError(f"{_label(module)}: p={p} must be > 0 (p > 1: number of groups; "
                             "p ≤ 1: inverse group size)")
        g = p_grouping(c, p)
        source = f"p={p} gives {g} groups, which"
    else:
        g = default if groups is None else groups
        source = f"groups={g}"
    if g < 1:
        raise ValueError(f"{_label(module)}: {source} is fewer than 1 group for the {c} channels")
    if c % g:
        valid = [d for d in range(1, c + 1) if c % d == 0]
        raise ValueError(
            f"{_label(module)}: {source} does not divide the {c} channels; valid group counts: "
            f"{valid}")
    return g


def _channel_groups(module: nn.Module, x: jax.Array, groups: int | None, p: float | None,
                    unbiased: bool) -> tuple[int, int]:
    """(channels, group count) of ``x`` for a group norm; an unbiased group variance needs at
    least 2 elements per (sample, group)."""
    c = _channels(module, x)
    g = _group_count(module, c, groups, p)
    if unbiased and (c // g) * math.prod(x.shape[1:-1]) < 2:
        raise ValueError(
            f"{_label(module)}: the unbiased group variance needs ≥ 2 elements per group; "
            f"{g} groups of {c} channels on input {x.shape} give 1")
    return c, g


def _group_moments(xf: jax.Array, g: int, unbiased: bool) -> tuple[jax.Array, jax.Array]:
    """Per-sample, per-group mean and variance, broadcast back to the shape of xf."""
    xg = xf.reshape(xf.shape[:-1] + (g, xf.shape[-1] // g))
    axes = tuple(range(1, xf.ndim - 1)) + (xg.ndim - 1,)
    mean, var = _moments(xg, axes)
    if unbiased:
        n = xg.size // (xg.shape[0] * g)
        var = var * (n / (n - 1))
    return (jnp.broadcast_to(mean, xg.shape).reshape(xf.shape),
            jnp.broadcast_to(var, xg.shape).reshape(xf.shape))


@NORMS.register("group")
class GroupNorm(_Affine):
    """y = (x − μ_g)/√(σ²_g + eps)·γ + β with μ_g, σ²_g over (H, W, channels of group g) per sample.

    The group count is ``groups`` (default 32, PyTorch/Flax style) or, with ``p``, the rule of
    :func:`p_grouping` (docs/references.md#group-frn-evonorm). ``unbiased=False`` (default) is
    PyTorch's ``nn.GroupNorm``; ``unbiased=True`` uses the unbiased group variance (torch.var's
    default), as some reference code does. Channels are grouped consecutively, as in PyTorch.
    """

    groups: int | None = None
    p: float | None = None
    unbiased: bool = False

    needs_batch_stats: ClassVar[bool] = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        c, g = _channel_groups(self, x, self.groups, self.p, self.unbiased)
        mean, var = _group_moments(x.astype(_compute_dtype(x)), g, self.unbiased)
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        return self._affine(y, (c,)).astype(x.dtype)


@NORMS.register("frn")
class FilterResponseNorm(_Affine):
    """Filter Response Normalization with its TLU (Singh & Krishnan 2020).

    ν² = mean_{H,W} x² per sample and channel; y = γ·x/√(ν² + |ε|) + β; then, with ``tlu=True``
    (default), TLU: z = max(y, τ) (docs/references.md#group-frn-evonorm). ε is one learnable
    scalar ``eps`` per layer (shape (), init ``epsilon`` = 1e-5, used as |ε|);
    ``per_channel_eps=True`` learns one ε per channel instead; ``learnable_eps=False`` makes it a
    constant. τ (``tau``) is per channel, init 0.

    The TLU is part of this module (the FRN paper's "FRN layer"), because it *replaces* the
    activation: pair ``norm="frn"`` with ``act="identity"``. ``frn(tlu=False)`` is the bare
    normalization. On (N, C) input ν² = x² (a 1×1 spatial map).
    """

    learnable_eps: bool = True
    per_channel_eps: bool = False
    tlu: bool = True

    needs_batch_stats: ClassVar[bool] = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        c = _channels(self, x)
        nu2 = jnp.mean(jnp.square(x.astype(_compute_dtype(x))), spatial_axes(x), keepdims=True)
        eps_shape = (c,) if self.per_channel_eps else ()
        eps = (self.param("eps", nn.initializers.constant(self.epsilon), eps_shape,
                          self.param_dtype) if self.learnable_eps else self.epsilon)
        y = self._affine(x * jax.lax.rsqrt(nu2 + jnp.abs(eps)), (c,))
        if self.tlu:
            y = jnp.maximum(y, self.param("tau", nn.initializers.zeros, (c,), self.param_dtype))
        return y.astype(x.dtype)


@NORMS.register("evonorm_s0")
class EvoNormS0(_Affine):
    """EvoNorm-S0 (Liu et al. 2020): y = x·sigmoid(v·x)/s_g(x)·γ + β.

    s_g(x) = √(σ²_g + eps), the per-sample group standard deviation over (H, W, channels of
    the group), with ``groups`` = 32 by default; v (``v``), γ, β per channel, v init 1.
    ``unbiased=True`` (default) uses torch.var's unbiased group variance; ``unbiased=False`` is
    the biased one of the EvoNorm paper's code (docs/references.md#group-frn-evonorm). It
    replaces the activation: pair with ``act="identity"``.
    """

    groups: int = 32
    unbiased: bool = True

    needs_batch_stats: ClassVar[bool] = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        c, g = _channel_groups(self, x, self.groups, None, self.unbiased)
        xf = x.astype(_compute_dtype(x))
        _, var = _group_moments(xf, g, self.unbiased)
        v = self.param("v", nn.initializers.ones, (c,), self.param_dtype)
        y = xf * jax.nn.sigmoid(v * xf) * jax.lax.rsqrt(var + self.epsilon)
        return self._affine(y, (c,)).astype(x.dtype)


@NORMS.register("evonorm_b0")
class EvoNormB0(_Affine):
    """EvoNorm-B0 (Liu et al. 2020): y = x/max(√(σ²_B + eps), v·x + s_i(x))·γ + β.

    σ²_B: the biased batch variance over (N, H, W) per channel in training, the running variance
    in eval (EMA momentum 0.1 of the biased batch variance, starting at 1). s_i(x) = √(σ²_i +
    eps): the per-sample, per-channel instance standard deviation over (H, W) with the
    *unbiased* variance (docs/references.md#group-frn-evonorm), so at least 2 spatial positions
    are needed. v init 1. It replaces the activation: pair with ``act="identity"``.
    """

    momentum: float = 0.1

    needs_batch_stats: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c = _channels(self, x)
        hw = _spatial_size(self, x, minimum=2)
        xf = x.astype(_compute_dtype(x))
        var = _running_statistic(self, "var", jnp.ones, c, train,
                                 lambda: _moments(xf, reduction_axes(x))[1].reshape(c))
        _, inst_var = _moments(xf, spatial_axes(x))
        inst_std = jnp.sqrt(inst_var * (hw / (hw - 1)) + self.epsilon)
        v = self.param("v", nn.initializers.ones, (c,), self.param_dtype)
        den = jnp.maximum(jnp.sqrt(var + self.epsilon), v * xf + inst_std)
        return self._affine(xf / den, (c,)).astype(x.dtype)


def needs_batch_stats(spec: str) -> bool:
    """Whether the norm named by ``spec`` couples the samples of a batch."""
    return bool(getattr(NORMS.lookup(spec).func, "needs_batch_stats", False))


NORMS.alias({
    "identity": "none",
    "bn": "batch", "ghost_bn": "ghost_batch", "mean_only_bn": "mean_only",
    "l2n": "smn", "second_moment": "smn", "l1_moment": "l1n", "vn": "variance",
    "ln": "layer", "gn": "group", "frn_tlu": "frn",
    "evonorm_so": "evonorm_s0", "evonorm_bo": "evonorm_b0",
})
