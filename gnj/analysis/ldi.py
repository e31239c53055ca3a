"""Layer-wise dynamical isometry (LDI; Bhardwaj et al., CVPR 2021; REFERENCE.md §4.3).

LDI is the mean (and std) of the singular values of the layer-wise Jacobians of the NN-Mass
dense MLP, over samples and layers. In PyTorch notation (W of shape (out, in)):

    J₀ = diag(φ′(z₀))·W₀ (z₀ = L₀x)      J₁ = W₁      J_j = W_j·diag(φ′(in_j))  for j ≥ 2,

the last layer included (its forward applies no φ [as-written]). The reference codes the ELU
derivative as exp(x) for x > 0 and 0 otherwise [bug]; ``elu_derivative="reference"`` reproduces
it, the default ``"correct"`` uses 1 for x > 0 and exp(x) for x ≤ 0. Singular values come from
one batched ``jnp.linalg.svd`` per layer (no per-sample loop).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

DERIVATIVES = {
    ("elu", "correct"): lambda z: jnp.where(z > 0, 1.0, jnp.exp(z)),
    ("elu", "reference"): lambda z: jnp.where(z > 0, jnp.exp(z), 0.0),
    ("relu", "correct"): lambda z: (z > 0).astype(z.dtype),
    ("relu", "reference"): lambda z: (z > 0).astype(z.dtype),
}


def _derivative(act: str, elu_derivative: str):
    if elu_derivative not in ("correct", "reference"):
        raise ValueError(f"elu_derivative {elu_derivative!r}; valid: correct, reference")
    key = (act.split("(")[0], elu_derivative)
    if key not in DERIVATIVES:
        raise ValueError(f"LDI supports act elu or relu, got {act!r}")
    return DERIVATIVES[key]


def dense_mlp_jacobians(model: Any, variables: Any, x: jax.Array,
                        elu_derivative: str = "correct") -> list[jax.Array]:
    """Per-sample layer Jacobians (n, out, in) of a ``dense_mlp`` at inputs ``x``."""
    dphi = _derivative(model.act, elu_derivative)
    _, state = model.apply(variables, x, mutable=["intermediates"])
    pre = {k: v[0] for k, v in state["intermediates"].items()}
    params = variables["params"]
    w = lambda j: params[f"layer{j}"]["kernel"].T  # (out, in)
    n = x.shape[0]
    jacs = [dphi(pre["pre0"])[:, :, None] * w(0)[None], jnp.broadcast_to(w(1), (n, *w(1).shape))]
    for j in range(2, model.depth):
        jacs.append(w(j)[None] * dphi(pre[f"pre{j}"])[:, None, :])
    return jacs


def ldi(jacobians: list[jax.Array]) -> dict[str, float]:
    """Mean and std of all singular values of a list of (n, out, in) Jacobian stacks."""
    with jax.default_matmul_precision("highest"):
        sv = jnp.concatenate([jnp.linalg.svd(j, compute_uv=False).reshape(-1)
                              for j in jacobians])
    return {"ldi_mean": float(jnp.mean(sv)), "ldi_std": float(jnp.std(sv))}


def ldi_arrays(jacobians: list[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Jittable (mean, std) of all singular values (arrays, no host transfer)."""
    sv = jnp.concatenate([jnp.linalg.svd(j, compute_uv=False).reshape(-1) for j in jacobians])
    return jnp.mean(sv), jnp.std(sv)
