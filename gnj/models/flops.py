"""FLOPs of one forward pass of one sample (docs/references.md#flops).

Per conv or matmul, two FLOPs per multiply-accumulate; per conv/dense layer with a bias, one
FLOP per output element; activations, norms, pooling, concatenations and branch additions are
not counted:

    FLOPs = 2 · Σ_{conv, matmul} MACs + Σ_{conv/dense layers with a bias} (output elements)

with MACs(conv) = output elements · kh·kw·C_in/groups and MACs(matmul) = output elements · the
contracted length, read from the traced eval-mode forward at batch 1. A model that defines
``flops(input_shape)`` gives its own count from its sizes instead (for a dense layer the same
rule, 2·in·out + out).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _sub_jaxprs(value: Any) -> list[Any]:
    if hasattr(value, "eqns"):
        return [value]
    if hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        return [value.jaxpr]
    if isinstance(value, (tuple, list)):
        return [j for v in value for j in _sub_jaxprs(v)]
    return []


def matmul_macs(jaxpr: Any) -> int:
    """Multiply-accumulates of every ``conv_general_dilated`` and ``dot_general`` in a jaxpr
    (sub-jaxprs included)."""
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            out = eqn.outvars[0].aval.shape
            rhs = eqn.invars[1].aval.shape
            out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
            total += math.prod(out) * math.prod(rhs) // rhs[out_feature_dim]
        elif name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += math.prod(eqn.outvars[0].aval.shape) * math.prod(
                lhs[d] for d in lhs_contract)
        for value in eqn.params.values():
            for sub in _sub_jaxprs(value):
                total += matmul_macs(sub)
    return total


def count_flops(model: nn.Module, input_shape: tuple[int, ...], variables: Any = None) -> int:
    """FLOPs of ``model`` on one sample of ``input_shape`` (no batch axis); see the module doc."""
    from gnj.nn import onednn_conv

    if callable(getattr(model, "flops", None)):
        return model.flops(input_shape)
    x = jnp.zeros((1, *input_shape), jnp.float32)
    if variables is None:
        variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    bias_adds = 0

    def count_bias(next_fun, args, kwargs, context):
        nonlocal bias_adds
        y = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and hasattr(y, "shape"):
            own = context.module.variables.get("params", {})
            if "kernel" in own and "bias" in own:
                bias_adds += math.prod(y.shape)
        return y

    # traced with XLA's conv so every conv is one ``conv_general_dilated`` whatever the CPU path
    with nn.intercept_methods(count_bias), onednn_conv.use_impl("xla"):
        jaxpr = jax.make_jaxpr(lambda v, z: model.apply(v, z, train=False))(variables, x)
    return 2 * matmul_macs(jaxpr.jaxpr) + bias_adds


def count_params(variables: Any) -> int:
    """Number of parameters (the ``params`` collection)."""
    params = variables.get("params", variables) if isinstance(variables, dict) else variables
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))
