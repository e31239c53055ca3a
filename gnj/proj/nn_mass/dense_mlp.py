"""NN-Mass dense MLP with DenseNet-type random skip links (Bhardwaj et al.;
docs/proj/nn_mass.md#dense-mlp).

Width w, depth d (number of Linear layers), at most ``tc`` links per layer::

    o₀ = φ(L₀ x)            o₁ = L₁(o₀)            feat_k = [o_k, o_{k−1}, …, o₀]
    o_j = L_j(φ([o_{j−1}, feat_{j−2}[:, links_j]]))   for j = 2 … d−1 (the last without φ)

The link pool of layer j, ``feat_{j−2}``, has (j−1)·w channels and excludes the immediate
predecessor; layer j takes tc_j = min(tc, (j−1)·w) of them (clamped like the reference). With
``strict_tc=True`` (default) a ``tc`` larger than the *largest* pool, (d−2)·w, is rejected with a
ValueError (it would only mean "fully linked"); ``strict_tc=False`` accepts any tc ≥ 0 like the
reference. The reference's train_mlp defaults (w 8, d 4, tc 20) are therefore our defaults with
tc 16 — the same, fully linked network — or tc 20 with ``strict_tc=False``.
The NN-Mass of the net always uses the clamped counts, so it is defined for any tc ≥ 0.

Deliberate differences from the reference:

- The reference calls ``random.sample`` unseeded, so each instance differs. Here the links come
  from ``gnj.proj.nn_mass.links``: ``link_sampler="python_random"`` (default) draws them as the
  reference does (``random.sample`` per layer, indices in the order drawn) from
  ``random.Random(topology_seed)``, i.e. the reference's topology after
  ``random.seed(topology_seed)``; ``link_sampler="numpy"`` uses NumPy's
  ``RandomState(topology_seed)`` (sorted indices). Vary ``topology_seed`` to average over
  topologies, as ``ldi.py`` does with its 5 iterations.
- The reference's BatchNorm1d modules are built but never used; they are left out.

Analysis hooks (for LDI, docs/proj/nn_mass.md#ldi):

- every layer is a block (``is_block = True``) whose ``__call__`` maps the layer's own input to
  its output, so the block Jacobians are J₀ = diag(φ′(L₀x))·W₀, J₁ = W₁ and
  J_j = W_j·diag(φ′(in_j)) (j ≥ 2, except the last layer, whose forward has no φ);
- the forward ``sow``s ``pre0`` (= L₀x) and ``pre{j}`` (= in_j, j ≥ 2) into ``intermediates``;
- :func:`layer_jacobian_factors` returns, per layer, W (out, in) and the pre-activations whose
  φ′ multiply it from the left / right: J = diag(φ′(left))·W·diag(φ′(right)); for the last
  layer it gives the reference's LDI convention (φ′ on its input although its forward has no φ).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gnj.models.layers import Layers
from gnj.nn import inits
from gnj.proj.nn_mass import links as link_sampling
from gnj.registry import MODELS


def link_counts(width: int, depth: int, tc: int) -> tuple[list[int], list[int]]:
    """(available paths, actual links) of layers 2 … d−1: paths (j−1)·w, links min(tc, paths)."""
    paths = [(j - 1) * width for j in range(2, depth)]
    return paths, [min(tc, p) for p in paths]


def sample_links(width: int, depth: int, tc: int, seed: int,
                 sampler: str = "python_random") -> list[np.ndarray]:
    """Link indices into ``feat_{j−2}`` for every layer j = 2 … d−1 (``gnj.proj.nn_mass.links``).

    ``feat_{j−2} = [o_{j−2}, …, o₀]`` (newest first), so index i picks unit ``i mod w`` of
    output ``o_{j−2−i//w}``.
    """
    return link_sampling.sample_links([link_counts(width, depth, tc)], seed, sampler)[0]


class MassLayer(nn.Module):
    """One layer of the dense MLP: ``y = [φ](W·[φ](x) + b)``, a block for analysis.

    ``act_in``: apply φ to the input (linked layers j ≥ 2 but the last);
    ``act_out``: apply φ to the output (layer 0). Parameters ``kernel`` (in, out), ``bias``.
    """

    in_features: int
    features: int
    layers: Layers
    act_in: bool = False
    act_out: bool = False

    is_block: ClassVar[bool] = True

    def setup(self) -> None:
        self.phi = self.layers.act()
        shape = (self.in_features, self.features)
        self.kernel = self.param("kernel", self.layers.init, shape)
        self.bias = self.param("bias", inits.torch_default_bias(self.in_features), (self.features,))

    def linear(self, x: jax.Array) -> jax.Array:
        """W·x + b (no activation)."""
        return x @ self.kernel + self.bias

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        z = self.linear(self.phi(x) if self.act_in else x)
        return self.phi(z) if self.act_out else z


@MODELS.register("dense_mlp")
class DenseMLP(nn.Module):
    """The NN-Mass MLP (input flattened); see the module docstring."""

    width: int = 8
    depth: int = 4
    tc: int = 16
    topology_seed: int = 0
    link_sampler: str = "python_random"
    strict_tc: bool = True
    num_classes: int = 10
    act: str = "elu"
    weight_init: str = "torch_default"

    tiny: ClassVar[dict] = dict(width=4, depth=4, tc=3, input_shape=(4, 4, 1))

    def check(self, strict: bool | None = None) -> None:
        """ValueError for sizes the model cannot have (tc above the largest pool if strict)."""
        if self.width < 1:
            raise ValueError(f"dense_mlp: width {self.width} must be ≥ 1")
        if self.depth < 3:
            raise ValueError(f"dense_mlp: depth {self.depth} must be ≥ 3 (two layers without "
                             "links, then linked layers)")
        link_sampling.check_sampler(self.link_sampler, "dense_mlp")
        max_pool = (self.depth - 2) * self.width
        strict = self.strict_tc if strict is None else strict
        if self.tc < 0:
            raise ValueError(f"dense_mlp: tc {self.tc} must be ≥ 0 (links per layer)")
        if strict and self.tc > max_pool:
            raise ValueError(f"dense_mlp: tc {self.tc} exceeds the largest link pool "
                             f"({max_pool} = (depth−2)·width); allowed: 0 … {max_pool} (or any "
                             "tc ≥ 0 with strict_tc=False, clamped like the reference)")

    def links(self) -> list[np.ndarray]:
        """Link indices of layers 2 … d−1 (into ``feat_{j−2}``, see :func:`sample_links`)."""
        self.check()
        return sample_links(self.width, self.depth, self.tc, self.topology_seed,
                            self.link_sampler)

    def structure(self, in_features: int) -> list[dict[str, Any]]:
        """Per layer: ``in``/``out`` features, ``links`` (indices or None), φ placement."""
        links = self.links()
        rows = [dict(layer=0, inp=in_features, out=self.width, links=None, act_in=False,
                     act_out=True),
                dict(layer=1, inp=self.width, out=self.width, links=None, act_in=False,
                     act_out=False)]
        for j in range(2, self.depth):
            last = j == self.depth - 1
            rows.append(dict(layer=j, inp=self.width + len(links[j - 2]),
                             out=self.num_classes if last else self.width, links=links[j - 2],
                             act_in=not last, act_out=False))
        return rows

    def flops(self, input_shape: tuple[int, ...]) -> int:
        """FLOPs of one sample from the layer sizes, 2·in·out + out per layer (the reference's
        count; ``gnj.models.flops.count_flops`` defers to it)."""
        rows = self.structure(math.prod(input_shape))
        return sum(2 * r["inp"] * r["out"] + r["out"] for r in rows)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        links = self.links()
        x = jnp.reshape(x, (x.shape[0], -1))
        layers = Layers.from_specs("none", "plain", self.act, self.weight_init, gain=1.0)
        layer = lambda f, j, z, **kw: MassLayer(z.shape[-1], f, layers, name=f"layer{j}", **kw)
        first = layer(self.width, 0, x, act_out=True)
        self.sow("intermediates", "pre0", first.linear(x))
        outs = [first(x, train)]
        outs.append(layer(self.width, 1, outs[0])(outs[0], train))
        for j in range(2, self.depth):
            pool = jnp.concatenate(outs[j - 2::-1], axis=-1)  # feat_{j−2} = [o_{j−2}, …, o₀]
            inp = jnp.concatenate([outs[j - 1], pool[:, links[j - 2]]], axis=-1)
            self.sow("intermediates", f"pre{j}", inp)
            last = j == self.depth - 1
            outs.append(layer(self.num_classes if last else self.width, j, inp,
                              act_in=not last)(inp, train))
        return outs[-1]


@dataclasses.dataclass(frozen=True)
class LayerFactors:
    """J = diag(φ′(left))·kernel·diag(φ′(right)); ``None`` means no φ′ factor on that side.

    ``kernel`` is (out, in) (PyTorch orientation); ``left`` (n, out), ``right`` (n, in).
    """

    kernel: jax.Array
    left: jax.Array | None
    right: jax.Array | None


def layer_jacobian_factors(model: DenseMLP, variables: Any, x: jax.Array) -> list[LayerFactors]:
    """The LDI layer-Jacobian factors of a ``dense_mlp`` at inputs ``x`` (docs/proj/nn_mass.md#ldi).

    Layer 0: left = L₀x. Layer 1: no factor. Layers j ≥ 2: right = in_j = [o_{j−1}, links],
    the last layer included (the reference's LDI convention).
    """
    _, state = model.apply(variables, x, mutable=["intermediates"])
    pre = {k: v[0] for k, v in state["intermediates"].items()}
    params = variables["params"]
    w = lambda j: params[f"layer{j}"]["kernel"].T
    out = [LayerFactors(w(0), pre["pre0"], None), LayerFactors(w(1), None, None)]
    out += [LayerFactors(w(j), None, pre[f"pre{j}"]) for j in range(2, model.depth)]
    return out
