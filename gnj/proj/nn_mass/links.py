"""Random concatenation links of the NN-Mass dense nets (docs/proj/nn_mass.md#topology).

Layer j of a dense MLP or of a dense-CNN cell picks ``links_j`` of the ``paths_j`` channels of
its link pool, without replacement. Two samplers, both a pure function of the seed:

- ``"python_random"`` (the reference's): one ``random.Random(seed)`` stream, one
  ``sample(range(paths_j), links_j)`` per layer in the reference's call order (the layers in
  order, a dense CNN cell by cell), the indices kept in the order drawn. Same seed → the same
  links, in the same order, as the reference's code after ``random.seed(seed)`` (the dense CNNs
  seed with 2 themselves; the dense MLP does not seed, so its topology is the reference's under
  ``random.seed(topology_seed)``).
- ``"numpy"``: ``numpy.random.RandomState(seed).choice(paths_j, links_j, replace=False)`` per
  layer, sorted (the sampler gnj used before it followed the reference: the same distribution of
  networks, not the same networks).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

LINK_SAMPLERS = ("python_random", "numpy")


def check_sampler(sampler: str, model: str) -> None:
    """ValueError naming ``sampler`` and the valid ones."""
    if sampler not in LINK_SAMPLERS:
        raise ValueError(f"{model}: unknown link_sampler {sampler!r}; valid: "
                         f"{', '.join(LINK_SAMPLERS)}")


def sample_links(groups: Sequence[tuple[Sequence[int], Sequence[int]]], seed: int,
                 sampler: str = "python_random") -> list[list[np.ndarray]]:
    """Link indices for every group (cell) of layers, one stream over all groups.

    ``groups``: per group, (paths_j, links_j) of its linked layers, in the reference's order.
    Returns per group, per layer, an int array of ``links_j`` distinct indices in
    [0, paths_j).
    """
    check_sampler(sampler, "links")
    if sampler == "python_random":
        stream = random.Random(seed)
        draw = lambda p, k: np.asarray(stream.sample(range(p), k), dtype=np.int64)
    else:
        rs = np.random.RandomState(seed)
        draw = lambda p, k: np.sort(rs.choice(p, size=k, replace=False)).astype(np.int64)
    return [[draw(p, k) for p, k in zip(paths, links)] for paths, links in groups]
