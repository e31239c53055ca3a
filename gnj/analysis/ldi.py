"""Layer-wise dynamical isometry (LDI; Bhardwaj et al., CVPR 2021; REFERENCE.md §4.3).

LDI is the mean (and std) of the singular values of the layer-wise Jacobians of a chain of dense
layers, over samples and layers. Generically, a layer with weight W (out, in) whose input passes
through φ first and/or whose output passes through φ has, at sample x, the Jacobian

    J = diag(φ′(z_out)) · W · diag(φ′(z_in))

with the factor left out where no φ applies (:class:`Layer`: ``weight``, ``pre_in``,
``pre_out``). The NN-Mass dense MLP (``gnj.models.dense_mlp``, PyTorch notation) gives

    J₀ = diag(φ′(L₀x))·W₀      J₁ = W₁      J_j = W_j·diag(φ′(in_j))  for j ≥ 2,

the last layer included although its forward applies no φ [as-written]. The reference codes the
ELU derivative as exp(x) for x > 0 and 0 otherwise [bug]; ``elu_derivative="reference"``
reproduces it, the default ``"correct"`` uses 1 for x > 0 and α·exp(x) for x ≤ 0. Singular
values come from one batched ``jnp.linalg.svd`` per layer over all samples (no per-sample loop;
the reference loops ``torch.svd`` per sample). The standard deviation is the unbiased one
(divisor n − 1), as the reference's ``torch.Tensor.std()`` computes (docs/analysis.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gnj.registry import parse_spec

ELU_DERIVATIVES = ("correct", "reference")


def derivative(act: str, elu_derivative: str = "correct") -> Callable[[jax.Array], jax.Array]:
    """φ′ of activation spec ``act`` (elu, relu, leaky_relu, tanh, identity)."""
    if elu_derivative not in ELU_DERIVATIVES:
        raise ValueError(f"LDI: elu_derivative {elu_derivative!r}; valid: correct, reference")
    name, kw = parse_spec(act)
    if name == "elu":
        alpha = float(kw.get("alpha", 1.0))
        if elu_derivative == "reference":  # [bug] as in the reference, for x > 0 only
            return lambda z: jnp.where(z > 0, jnp.exp(z), 0.0)
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
    """A :class:`Layer` from any (kernel, left, right) factor record (e.g. ``dense_mlp``'s
    ``LayerFactors``: J = diag(φ′(left))·kernel·diag(φ′(right)))."""
    if isinstance(factors, Layer):
        return factors
    return Layer(factors.kernel, pre_in=factors.right, pre_out=factors.left)


def dense_mlp_layers(model: Any, variables: Any, x: jax.Array) -> list[Layer]:
    """The :class:`Layer` list of a ``dense_mlp`` at inputs ``x``.

    Uses the model's own ``layer_jacobian_factors`` when it has one, else its sown inputs
    (``pre0`` = L₀x, ``pre{j}`` = in_j).
    """
    from gnj.proj.nn_mass import dense_mlp

    factors = getattr(dense_mlp, "layer_jacobian_factors", None)
    if factors is not None:
        return [as_layer(f) for f in factors(model, variables, x)]
    _, state = model.apply(variables, x, mutable=["intermediates"])
    pre = {k: v[0] for k, v in state["intermediates"].items()}
    params = variables["params"]
    w = lambda j: params[f"layer{j}"]["kernel"].T  # (out, in)
    layers = [Layer(w(0), pre_out=pre["pre0"]), Layer(w(1))]
    layers += [Layer(w(j), pre_in=pre[f"pre{j}"]) for j in range(2, model.depth)]
    return layers


def dense_mlp_jacobians(model: Any, variables: Any, x: jax.Array,
                        elu_derivative: str = "correct") -> list[jax.Array]:
    """Per-sample layer Jacobians (N, out, in) of a ``dense_mlp`` at inputs ``x``."""
    dphi = derivative(model.act, elu_derivative)
    return layer_jacobians(dense_mlp_layers(model, variables, x), dphi, x.shape[0])


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


def ldi_of_layers(layers: Sequence[Layer], act: str = "elu", elu_derivative: str = "correct",
                  num_samples: int | None = None) -> dict[str, float]:
    """LDI of a generic layer chain with activation spec ``act``."""
    return ldi(layer_jacobians(layers, derivative(act, elu_derivative), num_samples))
