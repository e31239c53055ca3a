"""The NN-Mass MLP config family: the digits segment pairs depths at matched NN-Mass."""

import pytest


def _dense_mlp_mass(w: int, d: int, tc: int) -> float:
    """NN-Mass of a dense MLP (docs/proj/nn_mass.md): ρ·w·d, ρ = Σ min(tc, (i+1)w) / Σ (i+1)w."""
    pools = [(i + 1) * w for i in range(d - 2)]
    return sum(min(tc, p) for p in pools) / sum(pools) * w * d


def test_nn_mass_digits_segment_pairs_depths_at_matched_mass():
    from configs.nn_mass import mlp
    from gnj import models
    from gnj.proj.nn_mass.mass import nn_mass

    masses = {}
    for arg in mlp.SEGMENTS["digits_mass"]:
        c = mlp.get_config(arg)
        assert c.dataset.name == "digits" and c.batch_size == 64 and c.num_epochs == 20
        assert c.dataset.mean == (0.0,) and c.optim.name == "adam" and c.optim.lr == 0.001
        m = c.model
        masses[(m.depth, m.tc)] = nn_mass(models.build(m, num_classes=10)).mass
        assert masses[(m.depth, m.tc)] == pytest.approx(_dense_mlp_mass(m.width, m.depth, m.tc))
    assert sorted(masses) == [(d, tc) for d in (8, 16) for tc in (0, 3, 10, 30)]
    for tc in (3, 10, 30):  # the two depths differ in size but not much in NN-Mass
        assert abs(masses[(8, tc)] - masses[(16, tc)]) / masses[(8, tc)] < 0.1
    assert masses[(8, 0)] == masses[(16, 0)] == 0.0
