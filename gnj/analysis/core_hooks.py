"""The core's analyses, registered as hooks (``gnj.analysis.hooks``; docs/analysis.md#hooks).

- ``jacobian`` (analyze): block-wise and network moments φ(JJᵀ), φ((JJᵀ)²) and spread
  (``gnj.analysis.moments``) and the singular-value spectrum of the input → logits Jacobian
  (``gnj.analysis.spectrum``), per block too with ``analysis.block_spectra``. Where the network's
  N per-sample Jacobians fit in ``analysis.exact_max_bytes`` one exact computation gives both;
  otherwise Hutchinson moments and stochastic Lanczos quadrature. Keys: ``blocks``, ``network``,
  ``spectrum``.
- ``probes`` (train, every ``analysis.probe_every_steps``): per-layer activation / gradient
  probes (``gnj.analysis.probes``), keys ``probe/...`` and ``grad_l2/...``.
- ``correlations`` (train, every ``analysis.correlations_every_steps``): weight correlations and
  diversity (``gnj.analysis.correlations``), keys ``corr/...``.
- ``compare`` (sweep): ``<root>/analysis/compare.png``, φ(JJᵀ) by block and the network spectrum
  of every run with block moments, when there are two or more (``figures.plot_compare``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax

from gnj.analysis import correlations, figures, jacobian, moments, probes, spectrum
from gnj.analysis.hooks import AnalysisContext, sweep_hook, train_hook
from gnj.registry import ANALYSES


@ANALYSES.register("jacobian")
def jacobian_analysis(ctx: AnalysisContext) -> dict[str, Any]:
    """Moments of every block and of the network, and the network's spectrum."""
    model, variables, images = ctx.model, ctx.variables, ctx.images
    num_probes, exact_max_bytes = ctx.setting("num_probes"), ctx.setting("exact_max_bytes")
    lanczos_steps, spectrum_probes = ctx.setting("lanczos_steps"), ctx.setting("spectrum_probes")
    k_blocks, k_net, k_spec = ctx.rng.spawn(3)
    result: dict[str, Any] = {
        "blocks": moments.block_moments(model, variables, images, num_probes, k_blocks,
                                        exact_max_bytes),
    }
    net = moments.ModelMap(model)
    if moments.fits(net, variables, images, exact_max_bytes):  # one Jacobian for both
        jac = moments.exact_jacobians(net, variables, images)
        result["network"] = moments.exact_moments(jac)
        sv = jax.device_get(jacobian.singular_values(jac))
        result["spectrum"] = {"network": spectrum.exact_spectrum(sv, jac.shape[1])}
    else:
        result["network"] = moments.hutchinson_moments_fn(net, variables, images, num_probes,
                                                          k_net)
        result["spectrum"] = {"network": spectrum.slq_fn(net, variables, images, spectrum_probes,
                                                         lanczos_steps, k_spec)}
    if ctx.setting("block_spectra"):
        for name in result["blocks"]:
            result["spectrum"][name] = spectrum.block_spectrum(
                model, variables, images, name, spectrum_probes, lanczos_steps, k_spec,
                exact_max_bytes)
    return result


@train_hook("probes", every="probe_every_steps")
def build_probes(config: Any, model: Any, preprocess: Callable | None = None) -> Callable:
    return probes.build_probe(config, model, preprocess)


@train_hook("correlations", every="correlations_every_steps")
def build_correlations(config: Any, model: Any, preprocess: Callable | None = None) -> Callable:
    del model, preprocess  # the weights alone
    return correlations.build_hook(config)


@sweep_hook("compare")
def compare(root: str, analyses: dict[str, dict[str, Any]]) -> list[str]:
    compared = {run: result for run, result in analyses.items() if result.get("blocks")}
    if len(compared) < 2:
        return []
    out = os.path.join(root, "analysis")
    os.makedirs(out, exist_ok=True)
    return [figures.plot_compare(compared, os.path.join(out, "compare.png"))]
