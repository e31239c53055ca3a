"""Explicit symmetry breaking for nets whose channels start identical
(docs/references.md#symmetry-breaking).

Non-deterministic GPU convolutions can break the symmetry between identical channels by accident;
XLA is deterministic, so gnj provides the breaker explicitly:
:class:`SymmetryNoise` adds independent N(0, scale²) noise to the activations in the forward pass
and, independently, to their gradients in the backward pass (a ``jax.custom_vjp``), drawing both
keys from the ``noise`` RNG stream. It is the identity in eval mode or when ``scale`` is 0.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def add_noise(x: jax.Array, forward_key: jax.Array, backward_key: jax.Array, scale: float):
    """x + scale·ε₁ forward; the gradient gets + scale·ε₂ (ε₁, ε₂ independent N(0, 1))."""
    return x + scale * jax.random.normal(forward_key, x.shape, x.dtype)


def _fwd(x, forward_key, backward_key, scale):
    return add_noise(x, forward_key, backward_key, scale), backward_key


def _bwd(scale, backward_key, g):
    return g + scale * jax.random.normal(backward_key, g.shape, g.dtype), None, None


add_noise.defvjp(_fwd, _bwd)


def symmetry_noise(x: jax.Array, rng: jax.Array, scale: float) -> jax.Array:
    """Functional form: split ``rng`` into the forward and backward keys and apply
    :func:`add_noise`; the identity when ``scale`` is 0."""
    _check_scale(scale, "symmetry_noise")
    if scale == 0.0:
        return x
    forward_key, backward_key = jax.random.split(rng)
    return add_noise(x, forward_key, backward_key, float(scale))


def _check_scale(scale: float, where: str) -> None:
    if not scale >= 0.0:
        raise ValueError(f"{where}: scale={scale!r}; valid: ≥ 0 (the noise std; 0 disables it)")


class SymmetryNoise(nn.Module):
    """``noise(x, train)``: forward and backward Gaussian noise of std ``scale`` when training.

    Stands in for non-deterministic GPU convolutions (docs/references.md#symmetry-breaking); both
    keys come from the ``noise`` RNG stream, so a model applied with ``train=True`` and
    ``scale > 0`` needs ``rngs={"noise": key}``.
    """

    scale: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_scale(self.scale, f"SymmetryNoise {self.name or ''}".rstrip())
        if not train or self.scale == 0.0 or self.is_initializing():
            return x
        forward_key, backward_key = jax.random.split(self.make_rng("noise"))
        return add_noise(x, forward_key, backward_key, self.scale)


GradientNoise = SymmetryNoise
