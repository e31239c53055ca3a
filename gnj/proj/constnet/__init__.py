"""Beyond Signal Propagation (Blumenfeld et al.): ConstNet (WRN with constant init), LeakyNet, symmetry breaking, its schedule. See docs/proj/constnet.md.

Importing this package registers its entries in the core registries (gnj.registry).
"""

from gnj.proj.constnet import convert  # noqa: F401
