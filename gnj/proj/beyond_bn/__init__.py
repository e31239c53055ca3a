"""Beyond BatchNorm (Lubana et al.): its ResNet-56 with the in-place ReLU of the reference, its
BatchNorm convention, the split warm-up schedule and the reference's state-dict layouts.

Reference behaviour and kept quirks: docs/proj/beyond_bn.md. Configs: configs/beyond_bn/.

Importing this package registers its entries in the core registries (gnj.registry).
"""

from gnj.proj.beyond_bn import (  # noqa: F401
    batch_norm,
    convert,
    models,
    schedules,
)
