"""Online Normalization (Chiley et al., NeurIPS 2019), exact per-sample streams, forward and back.

Follows ``Cerebras/online-normalization`` (REFERENCE.md §5.2, §5.4). Per channel, with D = H·W
(D = 1 for dense inputs) and samples t = 0…N−1 taken **in batch order**:

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
scaling: divide each sample by √(mean over C·H·W of its square + ls_eps)), ``ac`` (clamp to
±clamp_value, zero gradient outside) or ``none``; the ECM runs in train and eval, as in the
reference. Eval uses the frozen forward streams, y = (x − μ)/√(σ² + eps), and updates nothing.

**Parallel, exact.** Every stream is a first-order linear recurrence h_t = a_t·h_{t−1} + b_t
(μ: a = αf; σ²: a = αf once μ is known; v: a_t = 1 − (1−αb)·mean_D(y_t²); u: a = αb once v is
known), so each is one ``jax.lax.associative_scan`` over the batch axis with the combine
(a₁, b₁)∘(a₂, b₂) = (a₁a₂, a₂b₁ + b₂): O(log N) depth, no Python or sequential loop, the same
values as the per-sample algorithm up to float rounding.

**Backward streams as state, functionally.** u and v are produced by the backward pass, which
autodiff cannot return as state. The normalisation core is a ``jax.custom_vjp`` that takes
(u, v) as inputs; its backward returns the *updated* (u, v) as their cotangents. The generic
train step differentiates the loss with respect to the ``backward_state`` collection and makes
the cotangent its new value (``gnj/train.py``), so nothing in the loop knows about this layer.
(If a model applies the same layer twice in one step, the cotangents add, as they would for a
shared parameter.)

**Sharding.** Under ``jit`` with the batch split over the mesh axis ``'data'``, the layer sees the
global batch: one stream in global batch order, identical to a single-device run (tested on 8
fake CPU devices). The reference has no multi-GPU strategy (its issue #20): per-device streams
would be a ``shard_map`` over this same core.

Presets (``preset=``): ``cifar10`` αf = 1023/1024, αb = 127/128; ``cifar100`` 511/512, 15/16;
``imagenet`` (and the module default) 0.999, 0.99. The default ``ecm`` is ``ls``, the value every
experiment CLI of the reference uses (the reference *module* defaults to ``ac``).
"""

from __future__ import annotations

import functools
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.registry import NORMS
from gnj.state import BACKWARD_STATE

PRESETS = {
    "cifar10": (1023 / 1024, 127 / 128),
    "cifar100": (511 / 512, 15 / 16),
    "imagenet": (0.999, 0.99),
    "fmnist": (0.999, 0.99),
}
ECMS = ("ls", "ac", "none")


def linear_recurrence(a: jax.Array, b: jax.Array, h0: jax.Array) -> jax.Array:
    """All h_t of h_t = a_t·h_{t−1} + b_t (t along axis 0) from h_{−1} = h0, by parallel scan."""

    def combine(left, right):
        a1, b1 = left
        a2, b2 = right
        return a1 * a2, a2 * b1 + b2

    a = jnp.broadcast_to(a, b.shape)
    prod_a, acc_b = jax.lax.associative_scan(combine, (a, b), axis=0)
    return prod_a * h0 + acc_b


def _shifted(h: jax.Array, h0: jax.Array) -> jax.Array:
    """(h_{−1}, h_0, …, h_{N−2}): the value each sample sees before its own update."""
    return jnp.concatenate([h0[None], h[:-1]], axis=0)


def _forward_streams(x, mu0, var0, alpha_f, eps):
    """y, s and the forward streams for x of shape (N, D, C)."""
    mu_x = jnp.mean(x, axis=1)
    var_x = jnp.mean(jnp.square(x - mu_x[:, None]), axis=1)
    mu = linear_recurrence(alpha_f, (1 - alpha_f) * mu_x, mu0)
    mu_prev = _shifted(mu, mu0)
    var_in = (1 - alpha_f) * var_x + alpha_f * (1 - alpha_f) * jnp.square(mu_x - mu_prev)
    var = linear_recurrence(alpha_f, var_in, var0)
    s = jnp.sqrt(_shifted(var, var0) + eps)
    y = (x - mu_prev[:, None]) / s[:, None]
    return y, s, mu[-1], var[-1]


def _control_process(g, y, s, u0, v0, alpha_b):
    """Input gradient and the updated (u, v) for g, y of shape (N, D, C), s of shape (N, C)."""
    c = 1 - alpha_b
    v = linear_recurrence(1 - c * jnp.mean(jnp.square(y), axis=1), jnp.mean(g * y, axis=1), v0)
    g_tilde = g - c * _shifted(v, v0)[:, None] * y
    g_hat = g_tilde / s[:, None]
    u = linear_recurrence(alpha_b, jnp.mean(g_hat, axis=1), u0)
    dx = g_hat - c * _shifted(u, u0)[:, None]
    return dx, u[-1], v[-1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def online_norm_core(x, mu0, var0, u0, v0, alpha_f, alpha_b, eps):
    """Normalised x (N, D, C) and the new forward streams; see the module docstring.

    Its VJP returns ∂L/∂x by the control process and, as the cotangents of (u0, v0), the
    updated backward streams (the streams are state, not differentiable inputs).
    """
    y, _, mu, var = _forward_streams(x, mu0, var0, alpha_f, eps)
    return y, mu, var


def _core_fwd(x, mu0, var0, u0, v0, alpha_f, alpha_b, eps):
    y, s, mu, var = _forward_streams(x, mu0, var0, alpha_f, eps)
    return (y, mu, var), (y, s, mu0, var0, u0, v0)


def _core_bwd(alpha_f, alpha_b, eps, residuals, cotangents):
    y, s, mu0, var0, u0, v0 = residuals
    g = cotangents[0]  # the new forward streams do not feed the loss
    dx, u, v = _control_process(g, y, s, u0, v0, alpha_b)
    return dx, jnp.zeros_like(mu0), jnp.zeros_like(var0), u, v


online_norm_core.defvjp(_core_fwd, _core_bwd)


@NORMS.register("online", "on", "online_norm")
class OnlineNorm(nn.Module):
    """Online Normalization for (N, C) and (N, H, W, C) inputs; see the module docstring."""

    decay_forward: float | None = None
    decay_backward: float | None = None
    preset: str | None = None
    eps: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    ecm: str = "ls"
    ls_eps: float = 1e-5
    clamp_value: float = 5.0
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
                raise ValueError(f"OnlineNorm {self.name!r}: {label}={value} must be in (0, 1)")
        return float(af), float(ab)

    def _check(self) -> None:
        if self.ecm not in ECMS:
            raise ValueError(f"OnlineNorm {self.name!r}: unknown ecm {self.ecm!r}; valid: "
                             f"{', '.join(ECMS)}")
        if self.ecm == "ac" and self.clamp_value <= 0:
            raise ValueError(f"OnlineNorm {self.name!r}: clamp_value={self.clamp_value} must "
                             "be > 0")

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        self._check()
        alpha_f, alpha_b = self.decays()
        c = x.shape[-1]
        dt = self.param_dtype
        mu = self.variable("batch_stats", "mean", jnp.zeros, (c,), dt)
        var = self.variable("batch_stats", "var", jnp.ones, (c,), dt)
        u = self.variable(BACKWARD_STATE, "u", jnp.zeros, (c,), dt)
        v = self.variable(BACKWARD_STATE, "v", jnp.zeros, (c,), dt)
        n = x.shape[0]
        flat = jnp.reshape(x, (n, -1, c)).astype(dt)
        if train and not self.is_initializing():
            y, new_mu, new_var = online_norm_core(flat, mu.value, var.value, u.value, v.value,
                                                  alpha_f, alpha_b, self.eps)
            mu.value, var.value = new_mu, new_var
        else:
            y = (flat - mu.value) * jax.lax.rsqrt(var.value + self.eps)
        y = jnp.reshape(y, x.shape)
        if self.use_scale:
            y = y * self.param("scale", nn.initializers.ones, (c,), dt)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (c,), dt)
        return self._ecm(y).astype(x.dtype)

    def _ecm(self, y: jax.Array) -> jax.Array:
        if self.ecm == "ls":
            axes = tuple(range(1, y.ndim))
            return y * jax.lax.rsqrt(jnp.mean(jnp.square(y), axis=axes, keepdims=True)
                                     + self.ls_eps)
        if self.ecm == "ac":
            return jnp.clip(y, -self.clamp_value, self.clamp_value)
        return y
