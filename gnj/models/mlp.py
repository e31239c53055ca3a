"""Plain multilayer perceptron: Linear → [norm] → act per hidden layer, Linear head.

Covers the Online Normalization FMNIST MLP (784-500-300-10, no bias, xavier-uniform; REFERENCE.md
§5.6) and the plain deep MLPs of the signal-propagation tests. Each hidden layer is a block.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.models import common
from gnj.registry import MODELS


class DenseLayer(nn.Module):
    """One hidden layer: ``act(norm(W x + b))``."""

    features: int
    norm: str
    act: str
    weight_init: str
    use_bias: bool

    is_block: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = common.dense(self.features, use_bias=self.use_bias,
                         kernel_init=common.make_init(self.weight_init, self.act), name="dense")(x)
        x = common.make_norm(self.norm, "norm")(x, train)
        return common.make_act(self.act)(x)


@MODELS.register("mlp")
class MLP(nn.Module):
    """MLP with hidden widths ``hidden`` (input flattened)."""

    num_classes: int = 10
    hidden: tuple[int, ...] = (500, 300)
    norm: str = "none"
    act: str = "relu"
    weight_init: str = "kaiming_normal"
    head_init: str | None = None
    use_bias: bool = True

    tiny: ClassVar[dict] = dict(hidden=(8, 8), input_shape=(4, 4, 1))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = jnp.reshape(x, (x.shape[0], -1))
        for i, width in enumerate(self.hidden):
            x = DenseLayer(width, self.norm, self.act, self.weight_init, self.use_bias,
                           name=f"layer{i}")(x, train)
        head_init = common.make_init(self.head_init or self.weight_init, "linear")
        return common.dense(self.num_classes, use_bias=self.use_bias, kernel_init=head_init,
                            name="head")(x)
