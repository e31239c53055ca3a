"""NN-Mass (Bhardwaj et al.): dense-link MLPs and CNNs, the NN-Mass of a model, LDI, the synthetic linear/circle datasets. See docs/proj/nn_mass.md.

Importing this package registers its entries in the core registries (gnj.registry).
"""

from gnj.proj.nn_mass import convert  # noqa: F401
