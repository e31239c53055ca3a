"""NN-Mass dense CNNs with concatenation skip links, regular and depthwise (Bhardwaj et al.;
docs/proj/nn_mass.md#dense-cnn).

``num_cells`` cells; cell k has width w_k = 16·wm·2^k, ``cell_depth`` D layers and at most
tc_k links per layer. With out_j the output of layer j of a cell::

    out₀ = N₀(conv₀(x))                      conv₀ 3×3, stride 1 in cell 0, 2 in later cells
    out₁ = N₁(conv₁(φ(out₀)))
    out_j = conv_j(φ(N_j(in_j)))             in_j = [out_{j−1}, pool_j[:, links_j]], j = 2 … D−1
    pool_j = [out_{j−1}, out_{j−2}, …, out₁]  (newest first; (j−1)·w_k channels)

The link pool *includes* the immediate predecessor [as-written; unlike the dense MLP]; layer j
takes min(tc_k, (j−1)·w_k) links (clamped like the reference); with ``strict_tc=True`` (default)
a tc_k larger than the largest pool (D−2)·w_k is a ValueError, ``strict_tc=False`` accepts any
tc_k ≥ 0 like the reference. The cell's output is out_{D−1}. Head (reference, 32×32 inputs):
2×2 average pool (stride 2) → flatten → Linear; for other input sizes the flatten simply has
another length (the Linear infers it), or ``head="global"`` uses a global mean instead.

``kind="depthwise"`` (``depth_wise_dense_cnn``): layers j ≥ 1, and layer 0 of cells > 0 (with
stride 2), use ``conv_depth`` in place of the 3×3 conv: 1×1 (in→w) → N → φ → depthwise 3×3
(stride) → N → φ → 1×1 (w→w) → N; layer 0 of cell 0 stays a 3×3 conv. As in the reference, the
cell's own norm N₀ / N₁ still follows layers 0 and 1 whatever the layer type (so a conv_depth
layer 0 or 1 ends in two norms in a row). This gives the reference's 867,656 parameters for the
train_cifar defaults (D 13, wm 2, tc 40/80/125, 10 classes); see docs/proj/nn_mass.md#dense-cnn.

Quirks and deliberate choices:

- Links (``gnj.proj.nn_mass.links``): ``link_sampler="python_random"`` (default) draws them
  exactly as the reference does, Python's ``random`` seeded with ``topology_seed`` (default 2, the
  reference's ``random.seed(2)``), ``random.sample`` per layer, cell by cell, indices in the
  order drawn: the reference's own links. ``link_sampler="numpy"`` uses NumPy's
  ``RandomState(topology_seed)`` instead (sorted; another topology of the same density).
- ``bn_eval_quirk=False`` (default): norms run in train mode when training. ``True`` reproduces
  the reference, whose layer/norm lists are put in eval mode and never switched back
  [as-written]: every norm always uses its running statistics (BatchNorm: 0/1, never updated,
  i.e. a per-channel affine γ·x/√(1+ε)+β).
- ``tc0_bn_bug=False`` (default): a layer with 0 links normalises its input. ``True`` reproduces
  the reference [bug], which computes N_j(in_j) and then discards it when tc = 0.
- ``wm`` is honoured (the reference's ``--wm`` flag is ignored, hard-coded 2).
- Convs have no bias; the default init is PyTorch's (U(±1/√fan_in), ``torch_default``).
Every layer is a block (``is_block``) from its own input to its output.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gnj.models import common
from gnj.models.layers import Layers
from gnj.proj.nn_mass import links as link_sampling
from gnj.registry import MODELS

KINDS = ("regular", "depthwise")
HEADS = ("avgpool2", "global")


def cell_widths(wm: float, num_cells: int) -> list[int]:
    """w_k = 16·wm·2^k, k = 0 … num_cells−1 (rounded to an integer)."""
    return [int(round(16 * wm * 2**k)) for k in range(num_cells)]


def cell_link_counts(width: int, cell_depth: int, tc: int) -> tuple[list[int], list[int]]:
    """(available paths, actual links) of layers 2 … D−1 of one cell."""
    paths = [(j - 1) * width for j in range(2, cell_depth)]
    return paths, [min(tc, p) for p in paths]


def sample_cell_links(widths: list[int], cell_depth: int, tcs: tuple[int, ...], seed: int,
                      sampler: str = "python_random") -> list[list[np.ndarray]]:
    """Link indices into pool_j for every cell and layer j = 2 … D−1 (``links``)."""
    groups = [cell_link_counts(w, cell_depth, tc) for w, tc in zip(widths, tcs)]
    return link_sampling.sample_links(groups, seed, sampler)


class ConvDepth(nn.Module):
    """1×1 → N → φ → depthwise 3×3 (stride) → N → φ → 1×1 → N (reference ``conv_depth``)."""

    features: int
    stride: int
    layers: Layers
    norm_train: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        lay, w, nt = self.layers, self.features, self.norm_train
        y = lay.act()(lay.norm(name="norm1")(lay.conv(w, 1, name="pw1")(x), nt))
        y = lay.conv(w, 3, self.stride, groups=w, name="dw")(y)
        y = lay.act()(lay.norm(name="norm2")(y, nt))
        return lay.norm(name="norm3")(lay.conv(w, 1, name="pw2")(y), nt)


class DenseCNNLayer(nn.Module):
    """One layer of a cell: ``[pre](x)`` → op → ``[N]`` (see the module docstring).

    ``pre``: ``"none"``, ``"act"`` (φ) or ``"norm_act"`` (φ∘N); ``op``: ``"conv"`` (3×3) or
    ``"conv_depth"``; ``post_norm``: a norm after the op.
    """

    features: int
    stride: int
    pre: str
    op: str
    post_norm: bool
    layers: Layers
    bn_eval_quirk: bool = False

    is_block: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        lay = self.layers
        nt = train and not self.bn_eval_quirk
        if self.pre == "norm_act":
            x = lay.norm(name="pre_norm")(x, nt)
        if self.pre in ("act", "norm_act"):
            x = lay.act()(x)
        if self.op == "conv":
            x = lay.conv(self.features, 3, self.stride, name="conv")(x)
        else:
            x = ConvDepth(self.features, self.stride, lay, nt, name="conv_depth")(x)
        if self.post_norm:
            x = lay.norm(name="post_norm")(x, nt)
        return x


@MODELS.register("dense_cnn")
class DenseCNN(nn.Module):
    """NN-Mass dense CNN (``kind`` regular or depthwise); see the module docstring."""

    num_classes: int = 10
    cell_depth: int = 13
    wm: float = 2
    tc: tuple[int, ...] = (40, 80, 125)
    num_cells: int = 3
    topology_seed: int = 2
    link_sampler: str = "python_random"
    strict_tc: bool = True
    kind: str = "regular"
    norm: str = "batch"
    act: str = "relu"
    conv: str = "plain"
    weight_init: str = "torch_default"
    bn_eval_quirk: bool = False
    tc0_bn_bug: bool = False
    head: str = "avgpool2"

    # widths 4, 8 and even link counts, so every layer input splits into 2 groups (GroupNorm)
    tiny: ClassVar[dict] = dict(cell_depth=4, wm=0.25, tc=(2, 4), num_cells=2,
                                input_shape=(8, 8, 3))

    @property
    def _label(self) -> str:
        return "dense_cnn" if self.kind == "regular" else "dense_cnn_depthwise"

    def widths(self, strict: bool | None = None) -> list[int]:
        """Cell widths, after checking every size (ValueError naming the bad value)."""
        m = self._label
        if self.kind not in KINDS:
            raise ValueError(f"{m}: unknown kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.head not in HEADS:
            raise ValueError(f"{m}: unknown head {self.head!r}; valid: {', '.join(HEADS)}")
        if self.num_cells < 1:
            raise ValueError(f"{m}: num_cells {self.num_cells} must be ≥ 1")
        if self.cell_depth < 3:
            raise ValueError(f"{m}: cell_depth {self.cell_depth} must be ≥ 3 (two layers "
                             "without links, then linked layers)")
        widths = cell_widths(self.wm, self.num_cells)
        if min(widths) < 1:
            raise ValueError(f"{m}: wm {self.wm} gives cell widths {widths}; need wm ≥ 1/32")
        if len(self.tc) != self.num_cells:
            raise ValueError(f"{m}: tc {tuple(self.tc)} needs one entry per cell "
                             f"(num_cells={self.num_cells})")
        for k, (w, tc) in enumerate(zip(widths, self.tc)):
            largest = (self.cell_depth - 2) * w
            strict = self.strict_tc if strict is None else strict
            if tc < 0:
                raise ValueError(f"{m}: tc {tc} of cell {k} must be ≥ 0 (links per layer)")
            if strict and tc > largest:
                raise ValueError(f"{m}: tc {tc} of cell {k} exceeds the largest link pool "
                                 f"({largest} = (cell_depth−2)·width {w}); allowed: 0 … "
                                 f"{largest} (or any tc ≥ 0 with strict_tc=False)")
        link_sampling.check_sampler(self.link_sampler, m)
        return widths

    def links(self) -> list[list[np.ndarray]]:
        """Link indices per cell and layer j = 2 … D−1 (into pool_j, newest first)."""
        return sample_cell_links(self.widths(), self.cell_depth, tuple(self.tc),
                                 self.topology_seed, self.link_sampler)

    def _check_input(self, x: jax.Array) -> None:
        # each stride-2 cell maps n → ⌈n/2⌉; the 2×2 pool needs a final map of at least 2×2
        need = 2 ** (self.num_cells - 1) + 1 if self.head == "avgpool2" else 1
        if x.ndim != 4 or min(x.shape[1:3]) < need:
            raise ValueError(f"{self._label}: input shape {x.shape[1:]} is too small (or not "
                             f"NHWC) for its {self.num_cells - 1} stride-2 cells and "
                             f"{self.head!r} head; need at least {need}×{need}")

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        widths = self.widths()
        links = self.links()
        self._check_input(x)
        depthwise = self.kind == "depthwise"
        layers = Layers.from_specs(self.norm, self.conv, self.act, self.weight_init)
        for k, w in enumerate(widths):
            layer = lambda j, stride, pre, op, post, k=k, w=w: DenseCNNLayer(
                w, stride, pre, op, post, layers, self.bn_eval_quirk, name=f"cell{k}_layer{j}")
            dw0 = depthwise and k > 0  # the first layer of later cells is a strided conv_depth
            # layers 0 and 1 end in the cell's norm whatever their type, like the reference
            outs = [layer(0, 1 if k == 0 else 2, "none", "conv_depth" if dw0 else "conv",
                          True)(x, train)]
            outs.append(layer(1, 1, "act", "conv_depth" if depthwise else "conv", True)(
                outs[0], train))
            for j in range(2, self.cell_depth):
                pool = jnp.concatenate(outs[j - 1:0:-1], axis=-1)  # [out_{j−1}, …, out₁]
                idx = links[k][j - 2]
                inp = jnp.concatenate([outs[j - 1], pool[..., idx]], axis=-1)
                pre = "act" if (self.tc0_bn_bug and len(idx) == 0) else "norm_act"
                outs.append(layer(j, 1, pre, "conv_depth" if depthwise else "conv", False)(
                    inp, train))
            x = outs[-1]
        if self.head == "avgpool2":
            x = nn.avg_pool(x, (2, 2), (2, 2)).reshape(x.shape[0], -1)
        else:
            x = common.global_avg_pool(x)
        return common.dense(self.num_classes, name="fc")(x)


@MODELS.register("dense_cnn_depthwise")
class DenseCNNDepthwise(DenseCNN):
    """:class:`DenseCNN` with ``kind="depthwise"`` (reference ``depth_wise_dense_cnn``)."""

    kind: str = "depthwise"

    tiny: ClassVar[dict] = dict(DenseCNN.tiny)


#: the reference script's names for the two architectures
MODELS.alias({"regular_dense_cnn": "dense_cnn", "depth_wise_dense_cnn": "dense_cnn_depthwise"})
