"""Layers: norms, convs (with the oneDNN CPU path), initializers, activations, noise.

Importing this package registers every core layer in ``gnj.registry`` (NORMS, CONVS, INITS,
ACTIVATIONS), each module with one alias table for its registry. ``cpp_build`` and
``impl_switch`` are the shared machinery of the C++ CPU kernels.
"""

from gnj.nn import activations, conv, inits, noise, norms  # noqa: F401
