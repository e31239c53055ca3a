"""gnj: normalization, initialization and signal propagation in deep networks, in JAX/Flax."""

__version__ = "0.1.0"
