"""Gradient Norm Equality (Chen et al.): the deep serial nets, the CIFAR ResNet with Fixup
scalars, the ImageNet Fixup ResNets and the reference's state-dict layouts.

Reference behaviour and kept quirks: docs/proj/gne.md. Configs: configs/gne/.

Importing this package registers its entries in the core registries (gnj.registry).
"""

from gnj.proj.gne import convert, fixup_resnet, models  # noqa: F401
