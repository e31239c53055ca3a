"""NN-Mass dense MLP with DenseNet-type random skip links (Bhardwaj et al.; REFERENCE §4.2, §4.4).

Width w, depth d (number of Linear layers), at most ``tc`` links per layer::

    o₀ = φ(L₀ x)            o₁ = L₁(o₀)            feat_k = [o_k, o_{k−1}, …, o₀]
    o_j = L_j(φ([o_{j−1}, feat_{j−2}[:, links_j]]))   for j = 2 … d−1 (the last without φ)

The link pool of layer j, ``feat_{j−2}``, has (j−1)·w channels and excludes the immediate
predecessor; layer j takes tc_j = min(tc, (j−1)·w) of them. The topology is drawn from
``numpy.random.default_rng(topology_seed)`` (the reference samples unseeded, so each instance
differs; seeding makes runs reproducible — vary ``topology_seed`` to average over topologies).
``act`` defaults to ELU, as in the reference. Every layer records its pre-activation input in
the ``intermediates`` collection (``sow``), which is what LDI needs (``gnj.analysis.ldi``).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gnj.models import common
from gnj.registry import MODELS


def link_counts(width: int, depth: int, tc: int) -> tuple[list[int], list[int]]:
    """(available paths, actual links) of layers 2 … d−1."""
    paths = [(j - 1) * width for j in range(2, depth)]
    return paths, [min(tc, p) for p in paths]


def sample_links(width: int, depth: int, tc: int, seed: int) -> list[np.ndarray]:
    """Sorted link indices into ``feat_{j−2}`` for every layer j = 2 … d−1."""
    rng = np.random.default_rng(seed)
    paths, links = link_counts(width, depth, tc)
    return [np.sort(rng.choice(p, size=k, replace=False)) for p, k in zip(paths, links)]


@MODELS.register("dense_mlp")
class DenseMLP(nn.Module):
    """The NN-Mass MLP; input flattened."""

    width: int = 8
    depth: int = 4
    tc: int = 20
    topology_seed: int = 0
    num_classes: int = 10
    act: str = "elu"
    weight_init: str = "torch_default"

    tiny: ClassVar[dict] = dict(width=4, depth=4, tc=3, input_shape=(4, 4, 1))

    def links(self) -> list[np.ndarray]:
        if self.depth < 3:
            raise ValueError(f"dense_mlp: depth {self.depth} must be ≥ 3 (two layers without "
                             "links, then linked layers)")
        max_pool = (self.depth - 2) * self.width
        if self.tc < 0 or self.tc > max_pool:
            raise ValueError(f"dense_mlp: tc {self.tc} exceeds the largest link pool "
                             f"({max_pool} = (depth−2)·width); allowed: 0 … {max_pool}")
        return sample_links(self.width, self.depth, self.tc, self.topology_seed)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        links = self.links()
        act = common.make_act(self.act)
        init = common.make_init(self.weight_init)
        layer = lambda f, i: common.dense(f, kernel_init=init, name=f"layer{i}")
        x = jnp.reshape(x, (x.shape[0], -1))
        z0 = layer(self.width, 0)(x)
        self.sow("intermediates", "pre0", z0)
        outs = [act(z0)]
        outs.append(layer(self.width, 1)(outs[0]))
        for j in range(2, self.depth):
            pool = jnp.concatenate(outs[j - 2::-1], axis=-1)  # [o_{j−2}, …, o₀]
            inp = jnp.concatenate([outs[j - 1], pool[:, links[j - 2]]], axis=-1)
            self.sow("intermediates", f"pre{j}", inp)
            last = j == self.depth - 1
            outs.append(layer(self.num_classes if last else self.width, j)(
                inp if last else act(inp)))
        return outs[-1]
