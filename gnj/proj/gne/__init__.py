"""Gradient Norm Equality (Chen et al.): serial nets, Fixup variants, the GNE CIFAR/ImageNet presets and schedules. See docs/proj/gne.md.

Importing this package registers its entries in the core registries (gnj.registry).
"""

from gnj.proj.gne import convert  # noqa: F401
