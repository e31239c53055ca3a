"""NN-Mass of a model (Bhardwaj et al., CVPR 2021; REFERENCE.md §4.2), from its fields alone.

- Concatenation-type nets (dense MLP): density ρ = Σ_j tc_j / Σ_j paths_j over the linked
  layers, NN-Mass = ρ·width·depth.
- Addition-type nets, summed over blocks (stem excluded): ResNet basic block ``planes + inplanes``;
  bottleneck ``(inplanes + 2·width)·inplanes / (2·inplanes + width)``; MobileNetV2 inverted
  residual with a skip ``(inp + 2·hidden)·inp / (2·inp + hidden)`` (0 without one).
"""

from __future__ import annotations

import dataclasses

from gnj.models import dense_mlp, resnet


@dataclasses.dataclass(frozen=True)
class NNMass:
    """NN-Mass and what it is made of."""

    mass: float
    density: float | None = None
    links: tuple[int, ...] = ()
    paths: tuple[int, ...] = ()


def nn_mass(model) -> NNMass:
    """NN-Mass of a gnj model instance (``gnj.models.build(...)``)."""
    if isinstance(model, dense_mlp.DenseMLP):
        paths, links = dense_mlp.link_counts(model.width, model.depth, model.tc)
        density = sum(links) / sum(paths)
        return NNMass(density * model.width * model.depth, density, tuple(links), tuple(paths))
    if isinstance(model, resnet.ResNet):
        return NNMass(_resnet_mass(*model.spec()))
    raise ValueError(f"NN-Mass is defined for dense_mlp and the resnet/resnext/wide_resnet "
                     f"family; got {type(model).__name__}")


def _resnet_mass(kind: str, layers: tuple[int, ...], groups: int, base_width: int) -> float:
    mass, inplanes = 0.0, 64
    for stage, blocks in enumerate(layers):
        planes = 64 * 2**stage
        for _ in range(blocks):
            if kind == "basic":
                mass += planes + inplanes
                inplanes = planes
            else:
                width = int(planes * base_width / 64) * groups
                mass += (inplanes + 2 * width) * inplanes / (2 * inplanes + width)
                inplanes = planes * 4
    return mass
