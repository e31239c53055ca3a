"""Plain multilayer perceptron: Linear → [norm] → act per hidden layer, Linear head.

Hidden layers use ``weight_init`` with the activation's gain; the head ``head_init`` (default:
``weight_init``) with gain 1; ``use_bias`` applies to every layer. Each hidden layer is a block.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnj.models import common
from gnj.models.layers import Layers
from gnj.registry import MODELS


class DenseLayer(nn.Module):
    """One hidden layer: ``act(norm(W x + b))``."""

    features: int
    layers: Layers
    use_bias: bool

    is_block: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = common.dense(self.features, use_bias=self.use_bias, kernel_init=self.layers.init,
                         name="dense")(x)
        return self.layers.act()(self.layers.norm(name="norm")(x, train))


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
        layers = Layers.from_specs(norm=self.norm, act=self.act, init=self.weight_init)
        for i, width in enumerate(self.hidden):
            x = DenseLayer(width, layers, self.use_bias, name=f"layer{i}")(x, train)
        head_init = common.make_init(self.head_init or self.weight_init, "linear")
        return common.dense(self.num_classes, use_bias=self.use_bias, kernel_init=head_init,
                            name="head")(x)
