"""Weight correlations and diversity of conv / dense kernels (docs/analysis.md#weight-correlations).

A kernel is read in (out, in, kh, kw) layout (Flax's (kh, kw, in, out) transposed; a dense
(in, out) kernel is (out, in, 1, 1)), giving three sets of rows:

- ``forward``: the ``out`` rows of length in·kh·kw (fan-in rows, one per filter);
- ``backward``: the ``in`` rows of length out·kh·kw (fan-out rows);
- ``correlations``: the out·in rows of length kh·kw. For a dense or 1×1 kernel every row has one
  element, hence no variance: ρ = 1 by the NaN → 1 rule below.

For each set: at most ``max_rows`` (5000) rows, drawn at random without replacement; the Pearson
correlation ρᵢⱼ of every pair of rows, NaN → 1 (a constant row correlates as 1); ρ = the mean of
the strict lower triangle, computed in O(rows·cols) from the centred, normalised rows zᵢ as
(‖Σᵢ zᵢ‖² − r)/2 summed pairs, never forming the r × r matrix. A row counts as constant when its
centred norm is ≤ 1e-12 of its norm (this also catches the rounding residue of constant rows).
Logged as −log|ρ| under ``<layer>/correlations``, ``/forward``, ``/backward``, and
``diversity`` = Σ_layers log √(1 − ρ_backward²) over every conv / dense kernel (−∞ when a layer's
backward rows are all constant, which the metric writer records as NaN).

**Cross-correlation** of two layers: with the ``forward`` rows of both kernels (``forward=False``:
the ``backward`` rows), the mean over all i, j of the cosine similarity
Cᵢⱼ = ⟨aᵢ, bⱼ⟩/(‖aᵢ‖·‖bⱼ‖) (no centring; NaN from a zero row → 1; i = j included when a layer
meets itself); NaN when the row lengths differ.

:func:`build_hook` gives the train-time hook (``correlations`` in ``gnj.analysis.core_hooks``,
every ``config.analysis.correlations_every_steps``): keys ``corr/<layer>/{forward,backward,
correlations}``, ``corr/diversity`` and, with ``analysis.cross_correlation_layers``
(comma-separated layer paths or ``"all"``), ``corr/cross/<a>~<b>`` for every pair a ≤ b.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from gnj.analysis.hooks import name_list, setting
from gnj.state import path_str

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
    return {"forward": w.reshape(out_c, -1), "backward": np.swapaxes(w, 0, 1).reshape(in_c, -1),
            "correlations": w.reshape(out_c * in_c, spatial)}


def layer_correlations(kernel: np.ndarray, max_rows: int = MAX_ROWS, seed: int = 0
                       ) -> dict[str, float]:
    """Raw mean correlations ρ of one kernel's row sets."""
    rng = np.random.default_rng(seed)
    return {name: mean_pair_correlation(rows, max_rows, rng)
            for name, rows in kernel_rows(kernel).items()}


def cross_correlation(kernel_a: np.ndarray, kernel_b: np.ndarray, forward: bool = True
                      ) -> float:
    """Mean cosine similarity of the rows of two kernels (see the module docstring)."""
    view = "forward" if forward else "backward"
    a, b = (np.asarray(kernel_rows(k)[view], np.float64) for k in (kernel_a, kernel_b))
    if a.shape[1] != b.shape[1]:
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (a @ b.T) / np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1))
    c[np.isnan(c)] = 1.0
    return float(np.mean(c))


def kernels(params: Any) -> dict[str, np.ndarray]:
    """Every parameter leaf called ``kernel`` with ≥ 2 axes, by its layer path ``a/b``."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]:
        layer, _, name = path_str(path).rpartition("/")
        if name == "kernel" and np.ndim(leaf) >= 2:
            out[layer or "kernel"] = np.asarray(leaf)
    return out


def cross_correlations(params: Any, layers: Any = "all", forward: bool = True
                       ) -> dict[str, float]:
    """``{"<a>~<b>": C̄}`` for every unordered pair a ≤ b of ``layers`` (paths, or ``"all"``).

    Raises:
      ValueError: naming a layer that has no kernel, and the layers that do.
    """
    found = kernels(params)
    names = list(found) if layers == "all" else list(layers)
    unknown = [n for n in names if n not in found]
    if unknown:
        raise ValueError(f"cross_correlations: no kernel at {unknown}; layers with kernels: "
                         f"{sorted(found)}")
    return {f"{a}~{b}": cross_correlation(found[a], found[b], forward)
            for i, a in enumerate(names) for b in names[i:]}


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
    for layer, kernel in kernels(params).items():
        rho = layer_correlations(kernel, max_rows, seed)
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
    and ``config.seed`` seeds the row subsampling. ``analysis.cross_correlation_layers`` (empty:
    none) adds ``corr/cross/<a>~<b>``, on the rows chosen by ``analysis.cross_correlation_forward``.
    """
    max_rows = int(setting(config, "correlations_max_rows"))
    seed = int(config.get("seed", 0))
    cross_layers = setting(config, "cross_correlation_layers")
    if cross_layers != "all":
        cross_layers = name_list(cross_layers)
    cross_forward = bool(setting(config, "cross_correlation_forward"))

    def hook(state: Any, batch: dict[str, Any]) -> dict[str, float]:
        del batch
        values = weight_correlations(state.params, max_rows, seed)
        if cross_layers:
            cross = cross_correlations(state.params, cross_layers, cross_forward)
            values.update({f"cross/{k}": v for k, v in cross.items()})
        return {prefix + k: float(v) for k, v in values.items()}

    return hook
