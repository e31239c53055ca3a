"""The NN-Mass paper's analyses as hooks (``gnj.analysis.hooks``; docs/proj/nn_mass.md#analyses).

- ``ldi`` (analyze, dense MLPs only): layer-wise dynamical isometry of the dense MLP's layer
  Jacobians (``gnj.analysis.ldi``) at the analysed inputs. ``analysis.elu_derivative``:
  "correct" (1 for x > 0, α·exp(x) for x ≤ 0) or "reference", the reference's ELU derivative
  exp(x) for x > 0 and 0 otherwise, kept to reproduce its LDI values (docs/proj/nn_mass.md#ldi).
  Key ``ldi``: ``{ldi_mean, ldi_std, elu_derivative}``.
- ``nn_mass`` (analyze, where NN-Mass is defined: ``gnj.proj.nn_mass.mass``): ``nn_mass`` and,
  as the reference reports them next to it, ``params`` and ``flops`` (``gnj.models.flops``).
- ``ldi_vs_mass`` (sweep): ``<root>/analysis/ldi_vs_mass.{png,json}``, LDI against NN-Mass over
  the runs whose ``analysis.json`` holds both.
- ``nn_mass_columns`` (report): NN-Mass, params, FLOPs and LDI (mean σ) columns of
  ``gnj.report``'s table, from each run's ``analysis.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gnj.analysis import figures
from gnj.analysis import ldi as ldi_lib
from gnj.analysis.hooks import AnalysisContext, Column, report_columns, sweep_hook
from gnj.models import flops
from gnj.proj.nn_mass import dense_mlp
from gnj.proj.nn_mass.mass import nn_mass as mass_of
from gnj.registry import ANALYSES, spec_name

ELU_DERIVATIVES = ("correct", "reference")


def derivative(act: str, elu_derivative: str = "correct") -> Callable[[jax.Array], jax.Array]:
    """φ′ of activation spec ``act``; ``elu_derivative="reference"``: the reference's ELU
    derivative (see the module docstring)."""
    if elu_derivative not in ELU_DERIVATIVES:
        raise ValueError(f"LDI: elu_derivative {elu_derivative!r}; valid: correct, reference")
    if elu_derivative == "reference" and spec_name(act) == "elu":
        return lambda z: jnp.where(z > 0, jnp.exp(z), 0.0)
    return ldi_lib.derivative(act)


def dense_mlp_layers(model: dense_mlp.DenseMLP, variables: Any, x: jax.Array
                     ) -> list[ldi_lib.Layer]:
    """The :class:`gnj.analysis.ldi.Layer` chain of a ``dense_mlp`` at flat inputs ``x``."""
    return [ldi_lib.as_layer(f) for f in dense_mlp.layer_jacobian_factors(model, variables, x)]


def dense_mlp_jacobians(model: dense_mlp.DenseMLP, variables: Any, x: jax.Array,
                        elu_derivative: str = "correct") -> list[jax.Array]:
    """Per-sample layer Jacobians (N, out, in) of a ``dense_mlp`` at flat inputs ``x``."""
    dphi = derivative(model.act, elu_derivative)
    return ldi_lib.layer_jacobians(dense_mlp_layers(model, variables, x), dphi, x.shape[0])


@ANALYSES.register("ldi")
def ldi(ctx: AnalysisContext) -> dict[str, Any]:
    if not isinstance(ctx.model, dense_mlp.DenseMLP):
        return {}
    elu_derivative = ctx.setting("elu_derivative")
    flat = jnp.reshape(ctx.images, (ctx.images.shape[0], -1))
    result = ldi_lib.ldi(dense_mlp_jacobians(ctx.model, ctx.variables, flat, elu_derivative))
    return {"ldi": {**result, "elu_derivative": elu_derivative}}


@ANALYSES.register("nn_mass")
def nn_mass(ctx: AnalysisContext) -> dict[str, Any]:
    try:
        mass = float(mass_of(ctx.model).mass)
    except ValueError:  # not a model NN-Mass is defined for
        return {}
    return {"nn_mass": mass, "params": flops.count_params(ctx.variables),
            "flops": flops.count_flops(ctx.model, tuple(ctx.images.shape[1:]), ctx.variables)}


def ldi_points(analyses: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """``[{"run", "nn_mass", "ldi_mean", "ldi_std"}]`` of the runs with LDI and NN-Mass."""
    return [{"run": run, "nn_mass": float(r["nn_mass"]),
             "ldi_mean": float(r["ldi"]["ldi_mean"]), "ldi_std": float(r["ldi"]["ldi_std"])}
            for run, r in analyses.items() if "ldi" in r and "nn_mass" in r]


def plot_ldi_vs_mass(sweep: list[dict[str, Any]], path: str, x: str = "nn_mass",
                     y: str = "ldi_mean", yerr: str = "ldi_std") -> str:
    """LDI against NN-Mass (``[{"nn_mass", "ldi_mean", "ldi_std", ...}]``): one point per run,
    error bar = the std of its singular values."""
    plt = figures.pyplot()
    pts = sorted(sweep, key=lambda r: r[x])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar([r[x] for r in pts], [r[y] for r in pts],
                yerr=[r.get(yerr, 0.0) for r in pts], marker="o", ls="none", capsize=3)
    ax.axhline(1.0, color="gray", ls="--", lw=0.8)
    ax.set(xlabel="NN-Mass", ylabel="LDI (mean singular value)",
           title=f"LDI vs NN-Mass ({len(pts)} runs)")
    return figures.save_figure(fig, path)


@sweep_hook("ldi_vs_mass")
def ldi_vs_mass(root: str, analyses: dict[str, dict[str, Any]]) -> list[str]:
    pts = ldi_points(analyses)
    if not pts:
        return []
    out = os.path.join(root, "analysis")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "ldi_vs_mass.json"), "w") as f:
        json.dump(pts, f, indent=1)
    return [plot_ldi_vs_mass(pts, os.path.join(out, "ldi_vs_mass.png"))]


def _analysis_value(run: Any, *keys: str) -> float:
    value: Any = run.analysis or {}
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) else float("nan")


@report_columns("nn_mass_columns")
def nn_mass_columns() -> tuple[Column, ...]:
    return (Column("nn_mass", "NN-Mass", "{:.1f}", lambda r: _analysis_value(r, "nn_mass")),
            Column("params", "params", "{:,.0f}", lambda r: _analysis_value(r, "params")),
            Column("flops", "FLOPs", "{:,.0f}", lambda r: _analysis_value(r, "flops")),
            Column("ldi_mean", "LDI (mean σ)", "{:.4f}",
                   lambda r: _analysis_value(r, "ldi", "ldi_mean")))
