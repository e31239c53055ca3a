"""Activation normalization layers, registered by name in ``gnj.registry.NORMS``.

Protocol shared by every norm: a registered factory takes keyword options and returns a Flax
module called as ``norm(x, train)`` on channel-last input (``(N, C)`` or ``(N, H, W, C)``).
State that is not a parameter (running statistics) lives in the ``batch_stats`` collection and
is updated only when ``train`` is true and the module is not initializing. A class attribute
``needs_batch_stats`` says whether the norm couples the samples of a batch.

BatchNorm follows PyTorch ``nn.BatchNorm2d`` (REFERENCE.md §6): biased batch variance for the
output, running stats ``r ← (1−m)·r + m·batch`` with momentum m = 0.1 and the *unbiased* batch
variance for the running variance; eval uses the running statistics.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.registry import NORMS


def reduction_axes(x: jax.Array) -> tuple[int, ...]:
    """Every axis but the channel axis (the last)."""
    return tuple(range(x.ndim - 1))


@NORMS.register("none", "identity", "plain")
class NoNorm(nn.Module):
    """The identity: ``y = x``."""

    needs_batch_stats: ClassVar[bool] = False

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        return x


@NORMS.register("batch", "bn")
class BatchNorm(nn.Module):
    """y = γ·(x − μ_B)/√(σ²_B + eps) + β over all axes but the channel (PyTorch convention)."""

    momentum: float = 0.1
    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    scale_init: float = 1.0

    needs_batch_stats: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c = x.shape[-1]
        axes = reduction_axes(x)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        if train:
            xf = x.astype(jnp.float32)
            mean = jnp.mean(xf, axes)
            var = jnp.mean(jnp.square(xf - mean), axes)
            if not self.is_initializing():
                n = x.size // c
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                ra_mean.value = (1 - m) * ra_mean.value + m * mean
                ra_var.value = (1 - m) * ra_var.value + m * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        y = (x - mean.astype(x.dtype)) * jax.lax.rsqrt(var + self.epsilon).astype(x.dtype)
        if self.use_scale:
            y = y * self.param("scale", nn.initializers.constant(self.scale_init), (c,), jnp.float32)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        return y.astype(x.dtype)


def needs_batch_stats(spec: str) -> bool:
    """Whether the norm named by ``spec`` couples the samples of a batch."""
    return bool(getattr(NORMS.lookup(spec).func, "needs_batch_stats", False))
