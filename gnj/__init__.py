"""gnj: gradient norm equality, normalization, initialization and signal propagation in JAX/Flax."""

__version__ = "0.1.0"
