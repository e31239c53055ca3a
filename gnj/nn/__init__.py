"""Layers: norms, convs, initializers, activations, online norm, noise.

Importing this package registers every layer in ``gnj.registry``.
"""

from gnj.nn import activations, conv, inits, noise, norms  # noqa: F401
