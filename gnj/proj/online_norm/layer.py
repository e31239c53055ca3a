"""Online Normalization (Chiley et al., NeurIPS 2019): exact per-sample streams, forward and back.

Written from the formulas of the reference (docs/proj/online_norm.md#algorithm). Per channel,
with D = H·W (D = 1 for dense inputs) and samples t = 0…N−1 taken **in batch order**:

Forward (train), streams μ, σ² (``batch_stats``, start 0 and 1)::

    s_t  = √(σ²_{t−1} + eps)            y_t = (x_t − μ_{t−1}) / s_t       (previous stats)
    d_t  = μ_x(t) − μ_{t−1}
    σ²_t = αf·σ²_{t−1} + (1−αf)·σ²_x(t) + αf(1−αf)·d_t²
    μ_t  = αf·μ_{t−1} + (1−αf)·μ_x(t)

with μ_x(t), σ²_x(t) the spatial mean and biased variance of sample t.

Backward (the control process), streams u, v (``backward_state``, start 0), g_t = ∂L/∂y_t::

    g̃_t = g_t − (1−αb)·v_{t−1}·y_t        v_t = v_{t−1} + mean_D(g̃_t·y_t)
    ĝ_t = g̃_t / s_t
    x′_t = ĝ_t − (1−αb)·u_{t−1}           u_t = u_{t−1} + mean_D(x′_t)      ∂L/∂x_t = x′_t

The layer is ``ECM(y·γ + β)`` with the error-compensation mechanism ``ecm``: ``ls`` (layer
scaling: divide each sample by √(mean over H·W·C of its square + ls_eps); the reference's
optional channel grouping is not ported), ``ac`` (clamp to ±clamp_value, zero gradient outside)
or ``none``. The ECM runs in train and eval, as in the reference. Eval uses the frozen forward
streams, y = (x − μ)/√(σ² + eps), and updates nothing. The default ``ecm="ls"`` is the one the
reference's experiment scripts use (its module defaults to ``ac``; docs/proj/online_norm.md#ecm).

**Two paths, same numbers.** Every stream is a first-order linear recurrence
h_t = a_t·h_{t−1} + b_t over per-sample (N, C) reductions, computed as a parallel prefix over
the batch axis (:func:`linear_recurrence`, ⌈log₂ N⌉ doubling steps); the heavy (N, D, C) work is
elementwise. On one CPU device the core is instead a C++ XLA FFI call (:mod:`.kernel`) that runs
the per-sample algorithm in one sweep over the data each way. Both agree with a per-sample NumPy
loop to 1e-10 in float64 and share their residuals, so either backward fits either forward.
``$GNJ_ONLINE_NORM_IMPL`` (gnj.settings) or :func:`use_impl` choose ``auto`` / ``xla`` /
``kernel``; ``auto`` keeps XLA under several devices (a custom call would make XLA gather the
sharded batch). Timings: docs/proj/online_norm.md#speed.

**Backward streams as state.** :func:`online_norm_core` is a ``jax.custom_vjp`` taking (u, v) as
inputs; its backward returns ∂L/∂x and, as the cotangents of (u, v), the *updated* streams. The
generic train step makes the cotangent of the ``backward_state`` collection its new value
(``gnj/train.py``), so nothing in the loop knows this layer. μ, σ² leave through the mutable
``batch_stats`` path, only when ``train and not self.is_initializing()``.

**Streams and sharding.** ``streams=1`` (default): one stream in global batch order, identical
under ``jit`` with the batch sharded over ``'data'``. ``streams=k`` (or ``"devices"``) splits the
batch into k contiguous chunks, each its own stream from the shared state (per-device streams
when k is the device count); the k final states are averaged.

Presets (``preset=``): ``cifar10`` αf = 1023/1024, αb = 127/128; ``cifar100`` 511/512, 15/16;
``imagenet`` (and ``fmnist``, and the default) 0.999, 0.99. Explicit ``decay_forward`` /
``decay_backward`` win over the preset.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj import settings
from gnj.nn.impl_switch import ImplSwitch
from gnj.proj.online_norm import kernel
from gnj.registry import NORMS
from gnj.state import BACKWARD_STATE

PRESETS = {
    "cifar10": (1023 / 1024, 127 / 128),
    "cifar100": (511 / 512, 15 / 16),
    "imagenet": (0.999, 0.99),
    "fmnist": (0.999, 0.99),
}
ECMS = ("ls", "ac", "none")


def _shift(h: jax.Array, k: int, axis: int, fill: float) -> jax.Array:
    """h moved k places later along ``axis``, the first k places filled with ``fill``."""
    kept = jax.lax.slice_in_dim(h, 0, h.shape[axis] - k, axis=axis)
    pad = [(0, 0)] * h.ndim
    pad[axis] = (k, 0)
    return jnp.pad(kept, pad, constant_values=fill)


def linear_recurrence(a: jax.Array | float, b: jax.Array, h0: jax.Array,
                      axis: int = 0) -> jax.Array:
    """All h_t of h_t = a_t·h_{t−1} + b_t (t along ``axis``) from h_{−1} = h0, in parallel.

    Hillis–Steele doubling: after the step with offset 2^k, (a_t, b_t) is the affine map of the
    steps t−2^{k+1}+1 … t composed, (a₁, b₁)∘(a₂, b₂) = (a₁a₂, a₂b₁ + b₂); (1, 0) pads the
    front. ``a`` is a Python float (a constant decay: the composed a's are the powers a^(2^k),
    so only b is scanned and h_t gets a^(t+1)·h0) or an array broadcasting against ``b``;
    ``h0`` broadcasts against one slice of ``b`` at fixed t.
    """
    b = jnp.asarray(b)
    n = b.shape[axis]
    h0 = jnp.expand_dims(jnp.asarray(h0), axis) if jnp.ndim(h0) == b.ndim - 1 else h0
    offset = 1
    if isinstance(a, float):
        power = a
        while offset < n:
            b = b + power * _shift(b, offset, axis, 0.0)
            power, offset = power * power, offset * 2
        steps = jnp.arange(1, n + 1, dtype=b.dtype).reshape([-1 if i == axis else 1
                                                               for i in range(b.ndim)])
        return jnp.power(jnp.asarray(a, b.dtype), steps) * h0 + b
    a = jnp.broadcast_to(a, b.shape)
    while offset < n:
        a_prev, b_prev = _shift(a, offset, axis, 1.0), _shift(b, offset, axis, 0.0)
        a, b = a * a_prev, a * b_prev + b
        offset *= 2
    return a * h0 + b


def _before(h: jax.Array, h0: jax.Array) -> jax.Array:
    """(h_{−1}, h_0, …, h_{n−2}) along axis 1 of h (G, n, C): what each sample sees first."""
    start = jnp.broadcast_to(h0, h[:, :1].shape)
    return jnp.concatenate([start, h[:, :-1]], axis=1)


def _streams(per_sample: jax.Array, k: int) -> jax.Array:
    """(N, C) per-sample values as (k, N/k, C): k streams of consecutive samples."""
    return jnp.reshape(per_sample, (k, per_sample.shape[0] // k, per_sample.shape[-1]))


def _samples(streams: jax.Array) -> jax.Array:
    """(k, n, C) stream values back to (N, C), and then to (N, 1, C) to broadcast over D."""
    return jnp.reshape(streams, (-1, 1, streams.shape[-1]))


def _forward_streams(x, mu0, var0, alpha_f, eps, k):
    """y, the (N, C) residuals of the control process and the final μ, σ² for x (N, D, C).

    Two passes over x (the mean, then the centred square), each a reduction over D alone (3-d,
    so XLA:CPU fuses the square into it), and one elementwise pass for y. The (N, C) residuals
    are s = √(σ²_{t−1} + eps), mean_D(y) = d/s and mean_D(y²) = (σ²_x + d²)/s² (d = μ_x − μ_{t−1}),
    which are exact identities of y = (x − μ_{t−1})/s, so the backward pass needs no
    reduction of y alone.
    """
    mu_x = jnp.mean(x, axis=1)
    var_x = jnp.mean(jnp.square(x - mu_x[:, None]), axis=1)
    mu_x, var_x = _streams(mu_x, k), _streams(var_x, k)
    mu = linear_recurrence(alpha_f, (1 - alpha_f) * mu_x, mu0, axis=1)
    mu_prev = _before(mu, mu0)
    d = mu_x - mu_prev
    var = linear_recurrence(alpha_f, (1 - alpha_f) * var_x + alpha_f * (1 - alpha_f) * d * d,
                            var0, axis=1)
    s = jnp.sqrt(_before(var, var0) + eps)
    y = (x - _samples(mu_prev)) / _samples(s)
    mean_y, mean_y2 = d / s, (var_x + d * d) / (s * s)
    return y, (s, mean_y, mean_y2), jnp.mean(mu[:, -1], 0), jnp.mean(var[:, -1], 0)


def _control_process(g, y, stats, u0, v0, alpha_b, k):
    """∂L/∂x and the final (u, v) for g, y of shape (N, D, C) and the forward's (N, C) stats.

    One pass over (g, y) for mean_D(g) and mean_D(g·y) and one elementwise pass for ∂L/∂x;
    mean_D(ĝ) = (mean_D(g) − (1−αb)·v_{t−1}·mean_D(y))/s follows from the (N, C) values.
    """
    s, mean_y, mean_y2 = stats
    c = 1 - alpha_b
    mean_g, mean_gy = _streams(jnp.mean(g, axis=1), k), _streams(jnp.mean(g * y, axis=1), k)
    v = linear_recurrence(1 - c * mean_y2, mean_gy, v0, axis=1)
    v_prev = _before(v, v0)
    u = linear_recurrence(alpha_b, (mean_g - c * v_prev * mean_y) / s, u0, axis=1)
    u_prev = _before(u, u0)
    dx = (g - _samples(c * v_prev) * y) / _samples(s) - _samples(c * u_prev)
    return dx, jnp.mean(u[:, -1], 0), jnp.mean(v[:, -1], 0)


IMPL_ENV = "GNJ_ONLINE_NORM_IMPL"
IMPLS = ("auto", "xla", "kernel")
settings.declare(settings.Setting(IMPL_ENV, "auto", IMPLS, "OnlineNorm implementation"))
_SWITCH = ImplSwitch("OnlineNorm implementation", IMPL_ENV, IMPLS)
#: The implementation asked for: the innermost :func:`use_impl`, else ``$GNJ_ONLINE_NORM_IMPL``,
#: else ``auto``.
requested_impl = _SWITCH.requested
#: ``with use_impl("auto" | "xla" | "kernel"):`` traces the training core with that path.
use_impl = _SWITCH.use


def resolve_impl(dtype) -> str:
    """``kernel`` or ``xla`` for a core of this dtype traced now.

    ``auto`` picks the CPU kernel when the default backend is CPU with one device, the dtype is
    float32 or float64 and the kernel builds (else the XLA path, after one warning if the build
    failed). Under several devices the XLA path stays: it lets XLA keep the batch sharded, where
    an opaque custom call would make it gather the batch onto one device. ``kernel`` forces the
    kernel and raises if it cannot be used.
    """
    impl = requested_impl()
    if impl == "xla":
        return "xla"
    if impl == "kernel":
        if not kernel.supports(dtype):
            raise ValueError(f"the OnlineNorm CPU kernel supports float32 and float64, not "
                             f"{jnp.dtype(dtype).name}")
        if not kernel.available():
            raise RuntimeError("OnlineNorm implementation 'kernel' was asked for, but the CPU "
                               "kernel could not be built (see the warning)")
        return "kernel"
    if (jax.default_backend() == "cpu" and jax.device_count() == 1 and kernel.supports(dtype)
            and kernel.available()):
        return "kernel"
    return "xla"


def online_norm_core(x, mu0, var0, u0, v0, alpha_f, alpha_b, eps, streams=1):
    """Normalised x of shape (N, D, C) and the new μ, σ²; ``streams`` = k splits the N samples
    into k consecutive chunks of N/k, each its own stream from the shared (μ0, σ²0, u0, v0).

    Its VJP returns ∂L/∂x by the control process and, as the cotangents of (u0, v0), the
    updated backward streams (the streams are state, not differentiable inputs; μ0, σ²0 get a
    zero cotangent). The implementation (CPU kernel or XLA) is chosen now, by
    :func:`resolve_impl`.
    """
    return _core(x, mu0, var0, u0, v0, alpha_f, alpha_b, eps, streams, resolve_impl(x.dtype))


def _forward(impl, x, mu0, var0, alpha_f, eps, k):
    if impl == "kernel":
        return kernel.forward(x, mu0, var0, alpha_f, eps, k)
    return _forward_streams(x, mu0, var0, alpha_f, eps, k)


def _backward(impl, g, y, stats, u0, v0, alpha_b, k):
    if impl == "kernel":
        return kernel.backward(g, y, stats, u0, v0, alpha_b, k)
    return _control_process(g, y, stats, u0, v0, alpha_b, k)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8, 9))
def _core(x, mu0, var0, u0, v0, alpha_f, alpha_b, eps, streams, impl):
    y, _, mu, var = _forward(impl, x, mu0, var0, alpha_f, eps, streams)
    return y, mu, var


def _core_fwd(x, mu0, var0, u0, v0, alpha_f, alpha_b, eps, streams, impl):
    y, stats, mu, var = _forward(impl, x, mu0, var0, alpha_f, eps, streams)
    return (y, mu, var), (y, stats, mu0, var0, u0, v0)  # the same residuals on both paths


def _core_bwd(alpha_f, alpha_b, eps, streams, impl, residuals, cotangents):
    y, stats, mu0, var0, u0, v0 = residuals
    g = cotangents[0]  # the new forward streams do not feed the loss
    dx, u, v = _backward(impl, g, y, stats, u0, v0, alpha_b, streams)
    return dx, jnp.zeros_like(mu0), jnp.zeros_like(var0), u, v


_core.defvjp(_core_fwd, _core_bwd)


@NORMS.register("online")
class OnlineNorm(nn.Module):
    """Online Normalization for (N, C) and (N, H, W, C) inputs; see the module docstring.

    Attributes:
      decay_forward: αf (``--afwd``), in (0, 1); None = the preset's.
      decay_backward: αb (``--abkw``), in (0, 1); None = the preset's.
      preset: ``cifar10`` | ``cifar100`` | ``imagenet`` | ``fmnist`` (None = imagenet values).
      eps: added to σ² under the root (1e-5).
      use_scale, use_bias: γ (init 1) and β (init 0), per channel.
      ecm: ``ls`` (default) | ``ac`` | ``none``; ``ls_eps`` (1e-5) and ``clamp_value`` (5) are
        their constants.
      streams: 1 = one stream over the global batch; k or ``"devices"`` = k streams over
        contiguous chunks (per-device streams when k is the device count).
      param_dtype: dtype of γ, β and the four streams. The computation runs in
        promote(input dtype, float32, param_dtype), the norms' rule: float64 input stays
        float64 with float32 parameters, bfloat16 input is computed in float32.
    """

    decay_forward: float | None = None
    decay_backward: float | None = None
    preset: str | None = None
    eps: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    ecm: str = "ls"
    ls_eps: float = 1e-5
    clamp_value: float = 5.0
    streams: int | str = 1
    param_dtype: jnp.dtype = jnp.float32

    needs_batch_stats: ClassVar[bool] = True

    def decays(self) -> tuple[float, float]:
        """(αf, αb) from the explicit values, else the preset, else 0.999 / 0.99."""
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"OnlineNorm {self.name!r}: unknown preset {self.preset!r}; valid: "
                             f"{', '.join(PRESETS)}")
        af, ab = PRESETS[self.preset or "imagenet"]
        af = af if self.decay_forward is None else self.decay_forward
        ab = ab if self.decay_backward is None else self.decay_backward
        for label, value in (("decay_forward", af), ("decay_backward", ab)):
            if not 0.0 < value < 1.0:
                raise ValueError(f"OnlineNorm {self.name!r}: {label}={value} must be in the open "
                                 "interval (0, 1)")
        return float(af), float(ab)

    def num_streams(self) -> int:
        """The number of independent streams the training batch is split into."""
        if self.streams == "devices":
            return jax.device_count()
        if isinstance(self.streams, bool) or not isinstance(self.streams, int) or self.streams < 1:
            raise ValueError(f"OnlineNorm {self.name!r}: streams={self.streams!r} must be a "
                             "positive int or 'devices'")
        return self.streams

    def _check(self, x: jax.Array, train: bool) -> None:
        if self.ecm not in ECMS:
            raise ValueError(f"OnlineNorm {self.name!r}: unknown ecm {self.ecm!r}; valid: "
                             f"{', '.join(ECMS)}")
        if self.ecm == "ac" and not self.clamp_value > 0:
            raise ValueError(f"OnlineNorm {self.name!r}: clamp_value={self.clamp_value} must "
                             "be > 0")
        if x.ndim not in (2, 4):
            raise ValueError(f"OnlineNorm {self.name!r}: input of shape {x.shape}; expected "
                             "(N, C) or (N, H, W, C)")
        k = self.num_streams()
        if train and x.shape[0] % k:
            raise ValueError(f"OnlineNorm {self.name!r}: streams={k} does not divide the "
                             f"training batch of {x.shape[0]} samples")

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        self._check(x, train)
        alpha_f, alpha_b = self.decays()
        c = x.shape[-1]
        pdt = self.param_dtype
        mu = self.variable("batch_stats", "mean", jnp.zeros, (c,), pdt)
        var = self.variable("batch_stats", "var", jnp.ones, (c,), pdt)
        u = self.variable(BACKWARD_STATE, "u", jnp.zeros, (c,), pdt)
        v = self.variable(BACKWARD_STATE, "v", jnp.zeros, (c,), pdt)
        # compute dtype: float64 input stays float64 whatever param_dtype (the norms' rule)
        dt = jnp.promote_types(jnp.promote_types(x.dtype, jnp.float32), pdt)
        if train and not self.is_initializing():
            flat = jnp.reshape(x, (x.shape[0], -1, c)).astype(dt)
            y, new_mu, new_var = online_norm_core(
                flat, mu.value.astype(dt), var.value.astype(dt), u.value.astype(dt),
                v.value.astype(dt), alpha_f, alpha_b, self.eps, self.num_streams())
            mu.value = new_mu.astype(mu.value.dtype)
            var.value = new_var.astype(var.value.dtype)
        else:
            y = (x.astype(dt) - mu.value.astype(dt)) * jax.lax.rsqrt(
                var.value.astype(dt) + self.eps)
        y = jnp.reshape(y, x.shape)
        if self.use_scale:
            y = y * self.param("scale", nn.initializers.ones, (c,), pdt).astype(dt)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (c,), pdt).astype(dt)
        return self._ecm(y).astype(x.dtype)

    def _ecm(self, y: jax.Array) -> jax.Array:
        if self.ecm == "ls":
            axes = tuple(range(1, y.ndim))
            return y * jax.lax.rsqrt(jnp.mean(jnp.square(y), axis=axes, keepdims=True)
                                     + self.ls_eps)
        if self.ecm == "ac":
            return jnp.clip(y, -self.clamp_value, self.clamp_value)
        return y


NORMS.alias({"on": "online", "online_norm": "online"})
