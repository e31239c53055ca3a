"""Weight-correlation metrics and Diversity (Blumenfeld et al., ConstNet; REFERENCE.md §3.6).

For a kernel in PyTorch layout W (out, in, kh, kw) (Flax's (kh, kw, in, out) is transposed;
a dense (in, out) kernel is W (out, in) with kh = kw = 1), three sets of rows:

- ``forward``: the ``out`` rows of length in·kh·kw (filter / fan-in rows);
- ``backward``: the ``in`` rows of length out·kh·kw (fan-out rows);
- ``correlations``: the out·in rows of length kh·kw (kernel rows; convs with kh·kw > 1 only).

For each set: keep at most ``max_rows`` (5000) rows, drawn at random without replacement; take
the Pearson correlation ρᵢⱼ of every pair of rows, with NaN → 1 (a constant row, e.g. of a
ConstNet init, correlates as 1); ρ = mean of the strict lower triangle. The mean is computed in
O(rows·cols) from the centred, normalised rows zᵢ as (‖Σᵢ zᵢ‖² − r)/2 summed pairs, never forming
the r × r matrix. A row counts as constant when its centred norm is ≤ 1e-12 of its norm (NumPy's
``corrcoef`` gives NaN only for exactly zero variance; this also catches the rounding residue of
constant rows). Logged as −log|ρ| under ``<layer>/correlations``, ``/forward``, ``/backward``,
and ``diversity`` = Σ_layers log √(1 − ρ_backward²) over every conv / dense kernel.

In training, :func:`build_hook` gives the hook the loop calls every
``config.analysis.correlations_every_steps`` (the ConstNet configs: once per epoch, like the
reference's per-epoch TensorBoard scalars); its keys are ``corr/<layer>/{forward,backward,
correlations}`` and ``corr/diversity``. A layer whose backward rows are all constant (a ConstNet
init) has ρ_backward = 1 and makes the Diversity −∞, which the metric writer records as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

MAX_ROWS = 5000


def mean_pair_correlation(rows: np.ndarray, max_rows: int = MAX_ROWS,
                          rng: np.random.Generator | None = None) -> float:
    """Mean over pairs i > j of corrcoef(rows)ᵢⱼ with NaN → 1 (after subsampling rows)."""
    rows = np.asarray(rows, np.float64)
    r = rows.shape[0]
    if r < 2:
        return math.nan
    if r > max_rows:
        rng = np.random.default_rng(0) if rng is None else rng
        rows = rows[np.sort(rng.choice(r, size=max_rows, replace=False))]
        r = max_rows
    centred = rows - rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    valid = norms > 1e-12 * np.maximum(np.linalg.norm(rows, axis=1), 1e-300)
    z = centred[valid] / norms[valid, None]
    n_valid = int(valid.sum())
    total_pairs = r * (r - 1) / 2
    valid_pairs_sum = (float(np.sum(z.sum(axis=0) ** 2)) - n_valid) / 2
    nan_pairs = total_pairs - n_valid * (n_valid - 1) / 2
    return (valid_pairs_sum + nan_pairs) / total_pairs


def kernel_rows(kernel: np.ndarray) -> dict[str, np.ndarray]:
    """The ``forward``, ``backward`` (and for spatial kernels ``correlations``) row sets."""
    k = np.asarray(kernel)
    if k.ndim == 2:  # dense (in, out) → torch (out, in, 1, 1)
        w = k.T[:, :, None, None]
    elif k.ndim >= 3:  # (*spatial, in, out) → (out, in, *spatial)
        w = np.moveaxis(np.moveaxis(k, -1, 0), -1, 1)
    else:
        raise ValueError(f"correlations: kernel must have ≥ 2 axes, got shape {k.shape}")
    out_c, in_c = w.shape[:2]
    spatial = math.prod(w.shape[2:])
    views = {"forward": w.reshape(out_c, -1), "backward": np.swapaxes(w, 0, 1).reshape(in_c, -1)}
    if spatial > 1:
        views["correlations"] = w.reshape(out_c * in_c, spatial)
    return views


def layer_correlations(kernel: np.ndarray, max_rows: int = MAX_ROWS, seed: int = 0
                       ) -> dict[str, float]:
    """Raw mean correlations ρ of one kernel's row sets."""
    rng = np.random.default_rng(seed)
    return {name: mean_pair_correlation(rows, max_rows, rng)
            for name, rows in kernel_rows(kernel).items()}


def _neg_log(rho: float) -> float:
    if math.isnan(rho):
        return math.nan
    return math.inf if rho == 0 else -math.log(abs(rho))


def weight_correlations(params: Any, max_rows: int = MAX_ROWS, seed: int = 0
                        ) -> dict[str, float]:
    """``{"<path>/forward": −log|ρ|, …, "diversity": Σ log √(1 − ρ_b²)}`` for every kernel.

    Every parameter leaf called ``kernel`` with ≥ 2 axes counts (convs and dense layers); call
    once per epoch with ``state.params``.
    """
    out: dict[str, float] = {}
    diversity = 0.0
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]:
        keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        if not keys or keys[-1] != "kernel" or np.ndim(leaf) < 2:
            continue
        layer = "/".join(keys[:-1]) or "kernel"
        rho = layer_correlations(np.asarray(leaf), max_rows, seed)
        for name, value in rho.items():
            out[f"{layer}/{name}"] = _neg_log(value)
        b = rho["backward"]
        if not math.isnan(b):
            diversity += 0.5 * math.log(1.0 - b * b) if b * b < 1 else -math.inf
    out["diversity"] = diversity
    return out


def build_hook(config: Any, prefix: str = "corr/"
               ) -> Callable[[Any, dict[str, Any]], dict[str, float]]:
    """``hook(state, batch) -> {"corr/<layer>/forward": −log|ρ|, …, "corr/diversity": …}``.

    ``state`` is a :class:`gnj.state.TrainState` (only ``state.params`` is read, on the host);
    ``batch`` is ignored. ``config.analysis.correlations_max_rows`` (5000) caps the rows per set
    and ``config.seed`` seeds the row subsampling.
    """
    analysis = config.get("analysis", {}) or {}
    max_rows = int(analysis.get("correlations_max_rows", MAX_ROWS))
    seed = int(config.get("seed", 0))

    def hook(state: Any, batch: dict[str, Any]) -> dict[str, float]:
        del batch
        values = weight_correlations(state.params, max_rows, seed)
        return {prefix + k: float(v) for k, v in values.items()}

    return hook
