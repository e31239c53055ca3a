"""Online Normalization (Chiley et al., NeurIPS 2019), exact per-sample streams, forward and back.

Follows ``Cerebras/online-normalization`` (docs/references.md#online-norm) for the algorithm; the
code
here, the C++ kernel included, is written from the formulas. Per channel, with D = H·W (D = 1 for
dense inputs) and samples t = 0…N−1 taken **in batch order**:

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
streams, y = (x − μ)/√(σ² + eps), and updates nothing.

**Default ecm.** ``ls``: every experiment CLI of the reference (``--ecm``,
docs/references.md#online-norm)
uses it and the published numbers come from it; the reference *module* defaults to ``ac``
(since 2020-03, issue #22). Pass ``ecm="ac"`` for the module default.

**Parallel and exact.** Every stream is a first-order linear recurrence h_t = a_t·h_{t−1} + b_t
over the per-sample reductions (μ: a = αf, b = (1−αf)·μ_x; σ²: a = αf once μ is known;
v: a_t = 1 − (1−αb)·mean_D(y_t²), b_t = mean_D(g_t·y_t); u: a = αb, b_t = mean_D(ĝ_t) once v is
known). The heavy elementwise work (y, ĝ, x′ and the per-sample means) is fully parallel; only
these (N, C) recurrences couple the samples, and each is a parallel prefix over the batch axis
(:func:`linear_recurrence`, Hillis–Steele doubling, ⌈log₂ N⌉ steps, no sequential loop). The
values are those of the per-sample algorithm up to float rounding (tests: 1e-10 in float64
against a per-sample NumPy loop).

**Passes over the data.** The heavy arrays are (N, D, C) (3-d: a leading stream axis of size 1
made XLA:CPU's YNNPACK fuse the product-reductions into a kernel that took 65 ms for one
mean_D(g·y) at (128, 1024, 16)). Forward: mean_D(x), then mean_D((x − μ_x)²) (two-pass, as the
reference), then y. Backward: mean_D(g) and mean_D(g·y), then ∂L/∂x = (g − (1−αb)·v_{t−1}·y)/s −
(1−αb)·u_{t−1} in one elementwise pass. mean_D(y) = d/s, mean_D(y²) = (σ²_x + d²)/s² (d = μ_x −
μ_{t−1}) and mean_D(ĝ) = (mean_D(g) − (1−αb)·v_{t−1}·mean_D(y))/s are identities of the (N, C)
values, so y and ĝ are never reduced: 5 passes (XLA defaults, and gnj's default
``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``, which keep YNNPACK's
reduction fusions and so fuse a product into its reduction) or 7 (every YNNPACK fusion off,
``--xla_cpu_experimental_ynn_fusion_type=``, which do not).

Measured (XLA path), layer forward + backward as ``make bench`` runs it (``jit(grad)``, float32,
ecm none, no affine), 2 shared cores (load 4–7), min (median) over interleaved repeats, ms;
"before" is the previous (G, n, D, C) form with reductions of y², g·y and ĝ
(docs/online_norm.md, "Speed")::

    (N, H, W, C)       XLA flags          before          now            gnj BatchNorm (now)
    (128, 32, 32, 16)  defaults           61.5 (176)      7.23 (22.7)    4.48 (12.6)
    (32, 56, 56, 256)  defaults           1474 (1696)     229 (283)      210 (273)
    (128, 32, 32, 16)  ynn fusions off    9.00 (12.6)     9.62 (12.7)    5.62 (8.29)
    (32, 56, 56, 256)  ynn fusions off    295 (402)       327 (431)      175 (214)

Each stream recurrence costs ⌈log₂ N⌉ small (N, C) ops; all four together take 0.15–0.2 ms
(measured with D = 1). The doubling form of :func:`linear_recurrence` ties
``jax.lax.associative_scan`` at runtime and compiles 1.5–8× faster (docs/online_norm.md).

**The CPU kernel** (the default on one CPU device). On XLA:CPU those passes are the cost, so
there the core is an XLA FFI custom call in C++ (``online_norm_cpu.cc``, compiled on first use
by :mod:`gnj.nn.online_norm_kernel`) that runs the per-sample algorithm as written, sample after
sample, in **one sweep over the data each way**, and exactly so, because every output needs only
the *previous* stats: the sweep over sample t writes y_t = (x_t − μ_{t−1})/s_t and accumulates
Σ_D y, Σ_D y², after which μ_x = μ_{t−1} + s·mean(y) and σ²_x = s²·(mean(y²) − mean(y)²) (the
variance of x shifted by the running mean, well conditioned) give μ_t, σ²_t; the sweep over
(g_t, y_t) writes ∂L/∂x_t with v_{t−1}, u_{t−1} and accumulates Σ_D g, Σ_D g·y, after which
v_t = v_{t−1}·(1 − (1−αb)·mean(y²)) + mean(g·y) and u_t = αb·u_{t−1} + (mean(g) −
(1−αb)·v_{t−1}·mean(y))/s in closed form. So the forward reads x and writes y and the backward
reads g, y and writes ∂L/∂x, the least traffic the layer allows. Sums go to double per channel
(float32 partial sums over 16-pixel tiles first); the residuals are the XLA path's (s,
mean_D(y), mean_D(y²)), so either path's backward fits either forward. It is used when the
default backend is CPU with one device, the dtype float32 or float64 and the library builds
(``$GNJ_ONLINE_NORM_IMPL=auto``); ``xla`` / ``kernel`` force a path, :func:`use_impl` does so
within a block (both read when the layer is traced). Under several devices the XLA path stays:
a custom call is opaque to XLA's SPMD partitioner, which would gather the sharded batch for it.
If the compiler is missing or the build fails, one warning, then the XLA path. Measured with
the bench (``python -m bench.run --cases online_norm``, 2 shared cores, gnj's default flags,
jemalloc; min (median) over 3 runs, ms): (128, 32, 32, 16) kernel 3.41 (3.96), XLA path 12.0
(16.1), the per-sample PyTorch loop 71.5 (84.2), i.e. 18×; (32, 56, 56, 256) kernel 52.6
(55.7), XLA path 97.2 (103), PyTorch 228 (239), 4.2× — there the floor, 5 × 103 MB at this
machine's ~13–16 GB/s, is 33–40 ms (docs/online_norm.md, "Speed on XLA:CPU and the 10× target").

**Backward streams as state, functionally.** u and v are produced by the backward pass, which
autodiff cannot return as state. The normalisation core (:func:`online_norm_core`) is a
``jax.custom_vjp`` that takes (u, v) as inputs; its backward returns ∂L/∂x by the control
process and, as the cotangents of (u, v), the *updated* streams. The generic train step
differentiates the loss with respect to the ``backward_state`` collection and makes the
cotangent its new value (``gnj/train.py``, docs/INTERFACES.md), so nothing in the loop knows
about this layer. Forward-only use (eval, probes, ``train=True`` without a gradient) just reads
u and v. The new μ, σ² leave through the ordinary mutable ``batch_stats`` path, only when
``train and not self.is_initializing()``. (If a model applied the same layer twice in one
step, the cotangents would add, as for a shared parameter.)

**Sharding.** ``streams=1`` (default): under ``jit`` with the batch split over the mesh axis
``'data'`` the layer sees the global batch — one stream in global batch order, identical to a
single-device run (tested on 8 fake CPU devices). ``streams=k`` (or ``"devices"`` =
``jax.device_count()``) splits the batch into k contiguous equal chunks, each its own stream
(forward and control process) starting from the shared state; with k = the device count each
chunk is exactly one device's shard, so the streams run on their devices without communication:
per-device streams, the multi-GPU setting of the reference's issue #20 (for which it has no
strategy). The carried state is replicated, so the k streams' final μ, σ², u, v are averaged.
This is a reshape rather than a ``shard_map``: it needs no mesh, and means the same on one
device as on k.

Presets (``preset=``): ``cifar10`` αf = 1023/1024, αb = 127/128; ``cifar100`` 511/512, 15/16;
``imagenet`` (and ``fmnist``, and the module default) 0.999, 0.99. Explicit ``decay_forward`` /
``decay_backward`` win over the preset.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.nn import online_norm_kernel as kernel
from gnj.nn.impl_switch import ImplSwitch
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


@NORMS.register("online", "on", "online_norm")
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
