"""NN-Mass of a model, from its fields alone (docs/proj/nn_mass.md#nn-mass).

- Concatenation-type nets. Dense MLP: density ρ = Σ_j tc_j / Σ_j paths_j over the linked layers
  j = 2 … d−1 (paths_j = (j−1)·w, tc_j = min(tc, paths_j)), NN-Mass = ρ·width·depth. Dense CNNs
  (regular and depthwise): the same per cell k, NN-Mass = Σ_k ρ_k·w_k·D.
- Addition-type nets, summed over blocks (stem and head excluded): ResNet basic block
  ``planes + inplanes``; bottleneck ``(inplanes + 2·width)·inplanes / (2·inplanes + width)``;
  MobileNetV2 inverted residual with a skip ``(inp + 2·hidden)·inp / (2·inp + hidden)``, 0 without.

No forward pass is needed: everything comes from the module's fields. tc values above the largest
link pool are clamped as in the paper (whatever the model's ``strict_tc``); a negative tc is a
ValueError.
"""

from __future__ import annotations

import dataclasses

from gnj.models import mobilenet_v2, resnet
from gnj.proj.nn_mass import dense_cnn, dense_mlp

SUPPORTED = ("dense_mlp", "dense_cnn", "dense_cnn_depthwise", "resnet_imagenet (resnet18 … "
             "resnet152, resnext50_32x4d, resnext101_32x8d, wide_resnet50_2, wide_resnet101_2)",
             "mobilenet_v2", "mobilenet_v2_nn_mass_deep")


@dataclasses.dataclass(frozen=True)
class NNMass:
    """NN-Mass and what it is made of.

    ``density``: ρ of a dense MLP (a float), one ρ_k per cell of a dense CNN (a tuple), None for
    addition-type nets. ``links`` / ``paths``: per linked layer (MLP) or per cell, per layer
    (CNN). ``blocks``: each block's contribution (addition-type nets).
    """

    mass: float
    density: float | tuple[float, ...] | None = None
    links: tuple = ()
    paths: tuple = ()
    blocks: tuple[float, ...] = ()


def nn_mass(model) -> NNMass:
    """NN-Mass of a gnj model instance (``gnj.models.build(...)``).

    Raises:
      ValueError: for models where the paper does not define NN-Mass (lists the supported ones),
        or for invalid sizes of a supported model.
    """
    if isinstance(model, dense_mlp.DenseMLP):
        model.check(strict=False)
        paths, links = dense_mlp.link_counts(model.width, model.depth, model.tc)
        density = sum(links) / sum(paths)
        return NNMass(density * model.width * model.depth, density, tuple(links), tuple(paths))
    if isinstance(model, dense_cnn.DenseCNN):
        return _dense_cnn_mass(model)
    if isinstance(model, resnet.ResNet):
        return _resnet_mass(*model.spec())
    if isinstance(model, mobilenet_v2.MobileNetV2):
        _, specs, _ = model.specs()
        blocks = tuple(_inverted_mass(s) for s in specs)
        return NNMass(sum(blocks), blocks=blocks)
    raise ValueError(f"NN-Mass is defined for {', '.join(SUPPORTED)}; got "
                     f"{type(model).__name__}")


def _dense_cnn_mass(model: dense_cnn.DenseCNN) -> NNMass:
    mass, densities, all_links, all_paths = 0.0, [], [], []
    for w, tc in zip(model.widths(strict=False), model.tc):
        paths, links = dense_cnn.cell_link_counts(w, model.cell_depth, tc)
        rho = sum(links) / sum(paths)
        mass += rho * w * model.cell_depth
        densities.append(rho)
        all_links.append(tuple(links))
        all_paths.append(tuple(paths))
    return NNMass(mass, tuple(densities), tuple(all_links), tuple(all_paths))


def _inverted_mass(s: mobilenet_v2.BlockSpec) -> float:
    if not s.residual:
        return 0.0
    return (s.inp + 2 * s.hidden) * s.inp / (2 * s.inp + s.hidden)


def _resnet_mass(kind: str, layers: tuple[int, ...], groups: int, base_width: int) -> NNMass:
    blocks, inplanes = [], 64
    for stage, n in enumerate(layers):
        planes = 64 * 2**stage
        for _ in range(n):
            if kind == "basic":
                blocks.append(float(planes + inplanes))
                inplanes = planes
            else:
                width = int(planes * base_width / 64) * groups
                blocks.append((inplanes + 2 * width) * inplanes / (2 * inplanes + width))
                inplanes = planes * 4
    return NNMass(sum(blocks), blocks=tuple(blocks))
