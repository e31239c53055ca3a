"""Layer-wise dynamical isometry (LDI) of a chain of dense layers (docs/analysis.md#ldi).

LDI is the mean (and std) of the singular values of the layer-wise Jacobians, over samples and
layers. A layer with weight W (out, in) whose input and/or output passes through φ has, at
sample x, the Jacobian

    J = diag(φ′(z_out)) · W · diag(φ′(z_in))

with the factor left out where no φ applies (:class:`Layer`: ``weight``, ``pre_in``,
``pre_out``); the analysis hook of a model family supplies its chain, and φ′ (default: from the
activation spec, :func:`derivative`). Singular values come from one batched ``jnp.linalg.svd``
per layer over all samples; the std is the unbiased one (divisor n − 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gnj.registry import parse_spec


def derivative(act: str) -> Callable[[jax.Array], jax.Array]:
    """φ′ of activation spec ``act`` (elu, relu, leaky_relu, tanh, identity)."""
    name, kw = parse_spec(act)
    if name == "elu":
        alpha = float(kw.get("alpha", 1.0))
        return lambda z: jnp.where(z > 0, 1.0, alpha * jnp.exp(z))
    if name == "relu":
        return lambda z: (z > 0).astype(z.dtype)
    if name in ("leaky_relu", "lrelu"):
        s = float(kw.get("negative_slope", 0.01))
        return lambda z: jnp.where(z > 0, 1.0, s).astype(z.dtype)
    if name == "tanh":
        return lambda z: 1 - jnp.tanh(z) ** 2
    if name in ("identity", "linear", "none"):
        return jnp.ones_like
    raise ValueError(f"LDI: activation {act!r} has no derivative here; valid: elu, relu, "
                     "leaky_relu, tanh, identity")


class Layer(NamedTuple):
    """One dense layer of a chain: weight (out, in) and the pre-activations around it.

    ``pre_in`` (N, in): the layer's input before φ (J gets diag(φ′(pre_in)) on the right);
    ``pre_out`` (N, out): the layer's output before φ (diag(φ′(pre_out)) on the left). None where
    no φ applies on that side.
    """

    weight: jax.Array
    pre_in: jax.Array | None = None
    pre_out: jax.Array | None = None


def layer_jacobians(layers: Sequence[Layer], dphi: Callable[[jax.Array], jax.Array],
                    num_samples: int | None = None) -> list[jax.Array]:
    """Per-sample (N, out, in) Jacobians diag(φ′(pre_out))·W·diag(φ′(pre_in)) of each layer."""
    layers = [as_layer(layer) for layer in layers]
    if num_samples is None:
        sizes = [p.shape[0] for layer in layers for p in (layer.pre_in, layer.pre_out)
                 if p is not None]
        if not sizes:
            raise ValueError("LDI: no layer has a pre-activation; give num_samples")
        num_samples = sizes[0]
    jacs = []
    for i, layer in enumerate(layers):
        w = jnp.asarray(layer.weight)
        if w.ndim != 2:
            raise ValueError(f"LDI: layer {i} weight must be 2-D (out, in), got {w.shape}")
        n = num_samples
        j = jnp.broadcast_to(w, (n, *w.shape))
        if layer.pre_in is not None:
            j = j * dphi(layer.pre_in)[:, None, :]
        if layer.pre_out is not None:
            j = dphi(layer.pre_out)[:, :, None] * j
        jacs.append(j)
    return jacs


def dense_chain_layers(weights: Sequence[jax.Array], biases: Sequence[jax.Array | None],
                       x: jax.Array, act: Callable[[jax.Array], jax.Array]) -> list[Layer]:
    """Layers of the plain chain h ← φ(W h + b) (φ after every layer but the last).

    ``weights`` in (out, in) layout; layer l's Jacobian is diag(φ′(z_l))·W_l, the last W_L.
    """
    layers, h = [], x
    for i, (w, b) in enumerate(zip(weights, biases)):
        z = h @ jnp.asarray(w).T + (0.0 if b is None else b)
        last = i == len(weights) - 1
        layers.append(Layer(w, pre_out=None if last else z))
        h = z if last else act(z)
    return layers


def as_layer(factors: Any) -> Layer:
    """A :class:`Layer` from any (kernel, left, right) factor record
    (J = diag(φ′(left))·kernel·diag(φ′(right)))."""
    if isinstance(factors, Layer):
        return factors
    return Layer(factors.kernel, pre_in=factors.right, pre_out=factors.left)


def ldi_arrays(jacobians: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Jittable (mean, unbiased std) of all singular values of (N, out, in) Jacobian stacks."""
    with jax.default_matmul_precision("highest"):
        sv = jnp.concatenate([jnp.linalg.svd(j, compute_uv=False).reshape(-1)
                              for j in jacobians])
    return jnp.mean(sv), jnp.std(sv, ddof=1)


def ldi(jacobians: Sequence[jax.Array]) -> dict[str, float]:
    """``{"ldi_mean", "ldi_std"}`` over all singular values of all layers and samples."""
    mean, std = ldi_arrays(jacobians)
    return {"ldi_mean": float(mean), "ldi_std": float(std)}


def ldi_of_layers(layers: Sequence[Layer], act: str = "elu", num_samples: int | None = None
                  ) -> dict[str, float]:
    """LDI of a generic layer chain with activation spec ``act``."""
    return ldi(layer_jacobians(layers, derivative(act), num_samples))
