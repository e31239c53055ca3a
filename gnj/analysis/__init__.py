"""Analyses of trained or initialised models (docs/analysis.md).

- ``hooks``: the analysis hook API (``AnalysisContext``; the ``ANALYSES`` kinds: analyze,
  train, sweep and report entries); ``core_hooks``: the core's hooks (``jacobian``,
  ``probes``, ``correlations``, ``compare``). Papers register theirs in ``gnj/proj/<paper>/``.
- ``blocks``: blocks (``is_block = True``) and their real inputs, found by interception.
- ``jacobian``: exact per-sample Jacobians (jacfwd / jacrev by shape, chunked, memory budget).
- ``moments``: φ(JJᵀ) and spread per block and for the network, exact or Hutchinson.
- ``spectrum``: singular-value spectra by stochastic Lanczos (Golub–Kahan) quadrature.
- ``ldi``: layer-wise dynamical isometry of chains of dense layers.
- ``probes``: per-layer activation / gradient probes for the training loop.
- ``correlations``: weight correlations and diversity of conv / dense kernels.
- ``figures``: PNG figures; ``run``: ``--mode=analyze``; ``plots``: the plotting command line.

Importing the package registers the core's hooks (the registry does it on first lookup).
"""

from gnj.analysis import core_hooks  # noqa: F401
