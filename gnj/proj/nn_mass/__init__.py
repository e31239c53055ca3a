"""NN-Mass (Bhardwaj et al.): MLPs and CNNs with sampled dense skip links, the NN-Mass of a
model, the reference's LDI conventions, the synthetic linear/circle datasets, its analyses and
report columns, and the reference's state-dict layouts.

Reference behaviour and kept quirks: docs/proj/nn_mass.md. Configs: configs/nn_mass/.

Importing this package registers its entries in the core registries (gnj.registry).
"""

from gnj.proj.nn_mass import (  # noqa: F401
    analysis,
    convert,
    data,
    dense_cnn,
    dense_mlp,
    links,
    mass,
    models,
)
