"""The Beyond-BN reference's CIFAR ResNet-56 preset and its in-place-ReLU quirk
(docs/proj/beyond_bn.md#resnet-56).

``resnet56_lubana``: ``resnet_cifar`` with widths 32/64/128, 3×3 projection shortcuts
(conv + norm, option ``"C"``), post-activation by default, ``preact`` and ``skipinit`` as
options. Every conv is kaiming_normal (fan_in, ReLU gain √2) whatever the activation; the
classifier keeps PyTorch's default; conv bias only for weight-reparametrised convs (``sws``,
``weight_norm``).

Pre-activation without a norm: the reference's first in-place ReLU of the block overwrites the
block input, so its shortcut reads ReLU(x) (docs/proj/beyond_bn.md#inplace-relu);
``shortcut_reads_inplace_relu=True`` (default) follows it, ``False`` reads x.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax

from gnj.models.layers import is_no_norm
from gnj.models.resnet_cifar import SQRT2, BasicBlock, PreActBlock, ResNetCifar
from gnj.registry import ACTIVATIONS, MODELS, spec_name

#: activations the reference applies as an in-place ReLU (its scaled-ReLU activation's too)
INPLACE_RELU_ACTS = ("relu", "wn_scaled_relu")


class InplaceReluPreActBlock(PreActBlock):
    """Pre-activation block whose shortcut reads ReLU(x)."""

    def skip(self, x: jax.Array, train: bool) -> jax.Array:
        return super().skip(nn.relu(x), train)


@MODELS.register("resnet56_lubana")
class ResNet56Lubana(ResNetCifar):
    """The reference's ResNet-56; see the module docstring."""

    depth: int = 56
    width: int = 32
    num_classes: int = 100
    shortcut: str = "C"
    weight_init: str = f"kaiming_normal(gain={SQRT2})"
    stem_init: str | None = f"kaiming_normal(gain={SQRT2})"
    shortcut_init: str = f"kaiming_normal(gain={SQRT2})"
    head_init: str = "torch_default"
    shortcut_reads_inplace_relu: bool = True

    tiny: ClassVar[dict] = dict(depth=8, width=4, preact=True, skipinit=True,
                                input_shape=(8, 8, 3))
    family: ClassVar[str] = "resnet56_lubana"
    bias_rule: ClassVar[str] = "reparam_conv"

    def block_class(self) -> type[BasicBlock]:
        if (self.preact and self.shortcut_reads_inplace_relu and is_no_norm(self.norm)
                and ACTIVATIONS.canonical(spec_name(self.act)) in INPLACE_RELU_ACTS):
            return InplaceReluPreActBlock
        return super().block_class()
