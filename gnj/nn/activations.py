"""Activations, registered by name in ``gnj.registry.ACTIVATIONS``, and their init gains.

Every registered entry is a factory returning a Flax module called as ``act(x)``. Parameter-free
activations are wrapped in :class:`Elementwise`, so models treat all activations alike.
``gain(spec)`` is the init gain matched to an activation (docs/references.md#orthogonal-inits):
identity and tanh 1, relu/prelu/sprelu √2, leaky ReLU √(2/(1+s²)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.registry import ACTIVATIONS, parse_spec


class Elementwise(nn.Module):
    """A parameter-free activation ``fn(x)`` as a module."""

    fn: Callable[[jax.Array], jax.Array]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fn(x)


@ACTIVATIONS.register("relu")
def relu() -> nn.Module:
    return Elementwise(jax.nn.relu)


@ACTIVATIONS.register("identity")
def identity() -> nn.Module:
    return Elementwise(lambda x: x)


_GAINS: dict[str, Callable[[dict], float]] = {
    "identity": lambda kw: 1.0,
    "tanh": lambda kw: 1.0,
    "relu": lambda kw: math.sqrt(2.0),
    "prelu": lambda kw: math.sqrt(2.0),
    "sprelu": lambda kw: math.sqrt(2.0),
    "leaky_relu": lambda kw: math.sqrt(2.0 / (1.0 + kw.get("negative_slope", 0.01) ** 2)),
    # No standard gain: configs that need another pass ``gain=`` to the init
    # (docs/references.md#orthogonal-inits).
    "elu": lambda kw: 1.0,
    "selu": lambda kw: 1.0,
    "seluv2": lambda kw: 1.0,
    # ReLU below 6: He's √2 (torchvision's MobileNetV2 inits with the ReLU gain).
    "relu6": lambda kw: math.sqrt(2.0),
    # Unit second moment out for N(0, 1) in: pairs with unit-gain (weight-normed) convs
    # (docs/references.md#scaled-ws-weight-norm).
    "wn_scaled_relu": lambda kw: 1.0,
}


def register_gain(name: str, fn: Callable[[dict], float]) -> None:
    """Declare the init gain of activation ``name`` (canonical) as a function of its kwargs."""
    _GAINS[name] = fn


def gain(spec: str) -> float:
    """Init gain matched to activation ``spec``: linear/tanh/elu/selu/seluv2/wn_scaled_relu 1,
    relu/relu6/prelu/sprelu √2, leaky ReLU √(2/(1+s²)); 1 for an activation without an entry.
    Configs override it with an init's ``gain=`` kwarg."""
    name, kwargs = parse_spec(spec)
    ACTIVATIONS.get(name)  # unknown names raise with the valid list
    fn = _GAINS.get(ACTIVATIONS.canonical(name))
    return 1.0 if fn is None else float(fn(kwargs))


@ACTIVATIONS.register("leaky_relu")
def leaky_relu(negative_slope: float = 0.01) -> nn.Module:
    return Elementwise(lambda x: jax.nn.leaky_relu(x, negative_slope))


@ACTIVATIONS.register("tanh")
def tanh() -> nn.Module:
    return Elementwise(jnp.tanh)


@ACTIVATIONS.register("elu")
def elu(alpha: float = 1.0) -> nn.Module:
    return Elementwise(lambda x: jax.nn.elu(x, alpha))


@ACTIVATIONS.register("selu")
def selu() -> nn.Module:
    return Elementwise(jax.nn.selu)


@ACTIVATIONS.register("relu6")
def relu6() -> nn.Module:
    return Elementwise(jax.nn.relu6)


@ACTIVATIONS.register("wn_scaled_relu")
def wn_scaled_relu() -> nn.Module:
    """√(2π/(π−1))·(relu(x) − 1/√(2π)): zero mean, unit variance for x ~ N(0, 1)
    (docs/references.md#scaled-ws-weight-norm)."""
    scale, shift = math.sqrt(2 * math.pi / (math.pi - 1)), 1 / math.sqrt(2 * math.pi)
    return Elementwise(lambda x: scale * (jax.nn.relu(x) - shift))


class PReLU(nn.Module):
    """PyTorch ``nn.PReLU()``: one learnable slope shared by all channels, init 0.25.

    ``normalized=True`` gives sPReLU, prelu(x, a)/√(1+a²), with a not clamped
    (docs/references.md#selu-epsilon). The slope is created in ``param_dtype``.
    """

    init_slope: float = 0.25
    normalized: bool = False
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        a = self.param("slope", nn.initializers.constant(self.init_slope), (), self.param_dtype)
        y = jnp.where(x >= 0, x, a * x)
        return y * jax.lax.rsqrt(1 + a * a) if self.normalized else y


ACTIVATIONS.register("prelu")(
    lambda init_slope=0.25, param_dtype=jnp.float32: PReLU(init_slope, param_dtype=param_dtype))
ACTIVATIONS.register("sprelu")(
    lambda init_slope=0.25, param_dtype=jnp.float32: PReLU(init_slope, normalized=True,
                                                          param_dtype=param_dtype))


def seluv2_constants(gamma: float = 1.0, fixpoint: float = 1.0, epsilon: float = 0.07
                     ) -> tuple[float, float]:
    """(λ, α) of the depth-aware SeLU (docs/references.md#selu-epsilon). With x ~ N(0, v), v = q·γ
    (q = ``fixpoint``, γ = ``gamma`` = gain²) and Φ the standard normal CDF:

        γ·E[f′(x)²] = γ·(λ²α²·e^{2v}Φ(−2√v) + λ²/2) = 1 + ε
        E[f(x)²]    = λ²α²·(e^{2v}Φ(−2√v) − 2e^{v/2}Φ(−√v) + ½) + ½λ²v = q

    Both equations are linear in (λ²α², λ²), so gnj solves that 2×2 system exactly and returns
    the positive root (an iterative solver could stop at a sign-flipped one). A solution with
    λ² > 0, α² ≥ 0 exists iff 0 ≤ ε < v·e^{2v}Φ(−2√v)/c − 1 with c the bracket of the second
    equation (≈ 0.160 at γ = q = 1); ε = 0 gives α = 0, i.e. λ·ReLU. Otherwise ValueError.
    """
    from scipy.special import erfcx

    for name, value in (("gamma", gamma), ("fixpoint", fixpoint)):
        if not value > 0:
            raise ValueError(f"seluv2: {name}={value}; valid: > 0 ({name} sets the "
                             "pre-activation variance v = fixpoint·gamma)")
    v = fixpoint * gamma
    e2 = 0.5 * float(erfcx(math.sqrt(2 * v)))  # e^{2v}·Φ(−2√v), overflow-free
    e1 = 0.5 * float(erfcx(math.sqrt(v / 2)))  # e^{v/2}·Φ(−√v)
    c = e2 - 2 * e1 + 0.5
    eps_max = v * e2 / c - 1
    if not 0 <= epsilon < eps_max:
        why = ("ε < 0 would need α² < 0" if epsilon < 0 else
               "ε this large would need λ² ≤ 0")
        raise ValueError(f"seluv2: no solution for gamma={gamma}, fixpoint={fixpoint}, "
                         f"epsilon={epsilon}: {why}; valid: 0 ≤ epsilon < {eps_max:.6g} for "
                         "this gamma and fixpoint (the bound grows with fixpoint·gamma)")
    det = gamma * (e2 * v - c) / 2
    a = gamma * fixpoint * epsilon / (2 * det)  # λ²α²
    b = (gamma * e2 * fixpoint - c * (1 + epsilon)) / det  # λ²
    lam, alpha = math.sqrt(b), math.sqrt(a / b)
    residual = max(abs(gamma * (a * e2 + b / 2) - (1 + epsilon)),
                   abs(a * c + b * v / 2 - fixpoint))
    if residual > 1e-9 * max(1.0, 1 + epsilon, fixpoint):
        raise ValueError(f"seluv2: gamma={gamma}, fixpoint={fixpoint}, epsilon={epsilon} are "
                         f"numerically ill-conditioned (residual {residual:.2e}); use "
                         "fixpoint·gamma between 1e-3 and 1e3")
    return lam, alpha


@ACTIVATIONS.register("seluv2")
def seluv2(gamma: float = 1.0, fixpoint: float = 1.0, epsilon: float = 0.07) -> nn.Module:
    """λ·elu(x, α) with (λ, α) from :func:`seluv2_constants`; the mains pass γ = gain²."""
    lam, alpha = seluv2_constants(gamma, fixpoint, epsilon)
    return Elementwise(lambda x: lam * jax.nn.elu(x, alpha))


ACTIVATIONS.alias({"linear": "identity", "none": "identity", "lrelu": "leaky_relu"})
