"""Jacobian analysis (DESIGN.md; REFERENCE.md §1.11, §2.5, §3.6, §4.3, §6).

- ``blocks``: blocks (``is_block = True``) and their real inputs, found by interception.
- ``jacobian``: exact per-sample Jacobians (jacfwd / jacrev by shape, chunked, memory budget).
- ``gne``: φ(JJᵀ) and spread per block and for the network, exact or Hutchinson.
- ``spectrum``: singular-value spectra by stochastic Lanczos (Golub–Kahan) quadrature.
- ``ldi``: layer-wise dynamical isometry of dense chains (NN-Mass MLP).
- ``probes``: per-iteration activation / gradient probes for the training loop.
- ``correlations``: weight correlations and Diversity (ConstNet).
- ``plots``: PNG plots; ``run``: ``--mode=analyze``.

Submodules are imported on use (``from gnj.analysis import gne``) to keep imports light.
"""
