"""Online Normalization (Chiley et al.): the online norm layer (forward and backward streams,
layer scaling, activation clamping) with its CPU kernel, the batch-size rule for lr and momentum,
and the reference's state-dict layouts.

Reference behaviour and kept quirks: docs/proj/online_norm.md. Configs: configs/online_norm/.

Importing this package registers its entries in the core registries (gnj.registry).
"""

from gnj.proj.online_norm import convert, layer, schedules  # noqa: F401
