"""Beyond Signal Propagation (Blumenfeld et al.): ConstNet (a WRN with constant init and
explicit symmetry breaking), LeakyNet with per-layer init strings, the WRN step schedule and the
reference's state-dict layouts.

Reference behaviour and kept quirks: docs/proj/constnet.md. Configs: configs/constnet/.

Importing this package registers its entries in the core registries (gnj.registry).
"""

from gnj.proj.constnet import (  # noqa: F401
    convert,
    leakynet,
    models,
    schedules,
)
