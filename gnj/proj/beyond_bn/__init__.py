"""Beyond BatchNorm (Lubana et al.): its ResNet-56 / VGG presets, in-place quirks, warm-up schedule and probes. See docs/proj/beyond_bn.md.

Importing this package registers its entries in the core registries (gnj.registry).
"""

from gnj.proj.beyond_bn import batch_norm, convert  # noqa: F401
