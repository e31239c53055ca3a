"""GNEDNN's serial nets (REFERENCE.md §1.5): the CIFAR ResNet layout with no skip connections.

``SerialNet`` (``cifar/models/serial_net.py``, depth keys 20/32/44/56) and ``SerialNetNorm``
(``serial_net_norm.py``, keys 8/14/20/32/44/56) share one layout, so one model covers both:

    stem conv3×3 3→16 [+ norm] + act → 3 stages (16, 32, 64 channels; stride 2 at the start of
    stages 2 and 3) of n = (depth − 2)/6 blocks conv-[norm]-act-conv-[norm]-act → mean pool →
    Linear(64, classes).

Depth 32 has 31 convs + 1 Linear. Conv bias only when there is no norm. ``conv`` picks the conv
class (``plain``, ``centered`` (CenterConv2d), ``normed`` (WnConv2d)); the reference's
``norm_fn='wn'`` is ``norm="mean_only", conv="weight_norm_torch"`` (PyTorch's
``nn.utils.weight_norm``: g = ‖W‖ at init, no eps; ``conv="weight_norm"`` is Beyond-BN's
variant, g = 1 and eps 1e-5). Every conv, stem included, uses
``weight_init`` with the activation's gain (plain ``nn.Conv2d`` in GNEDNN's ``initialization()``);
the classifier is kaiming_normal with the ReLU gain (its ``nn.Linear`` rule).
"""

from __future__ import annotations

from typing import ClassVar

from gnj.models.resnet_cifar import ResNetCifar
from gnj.registry import MODELS


@MODELS.register("serial_net")
class SerialNet(ResNetCifar):
    """Plain (no-skip) CIFAR CNN of depth 6n+2; see the module docstring."""

    depth: int = 32
    residual: bool = False
    stem_init: str | None = None  # None: the stem uses weight_init, like every plain conv
    tiny: ClassVar[dict] = dict(depth=8, width=4, input_shape=(8, 8, 3))
    family: ClassVar[str] = "serial_net"
    bias_rule: ClassVar[str] = "no_norm"
