"""Jacobian analysis: exact and matrix-free GNE moments, LDI, block discovery, the analyze CLI."""
