"""Online Normalization (Chiley et al.): the online norm layer with its forward/backward
streams and CPU kernel, its ResNets. See docs/proj/online_norm.md.

Importing this package registers its entries in the core registries (gnj.registry).
"""

from gnj.proj.online_norm import convert, layer  # noqa: F401
