"""Weight correlations and Diversity (ConstNet §3.6) against np.corrcoef."""

import math

import numpy as np
import pytest

from gnj.analysis import correlations


def _reference_mean_corr(rows):
    """The reference's recipe: np.corrcoef of the rows, NaN → 1, mean of the strict lower part."""
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.corrcoef(rows)
    c[np.isnan(c)] = 1.0
    return c[np.tril_indices(len(rows), k=-1)].mean()


def test_mean_pair_correlation_matches_corrcoef():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(30, 7)) + rng.normal(size=(1, 7))  # correlated rows
    assert correlations.mean_pair_correlation(rows) == pytest.approx(_reference_mean_corr(rows),
                                                                     rel=1e-12)


def test_constant_rows_count_as_correlation_one():
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(6, 5))
    rows[[1, 4]] = [[0.5] * 5, [0.0] * 5]  # zero variance → NaN in corrcoef → 1
    assert correlations.mean_pair_correlation(rows) == pytest.approx(_reference_mean_corr(rows),
                                                                     rel=1e-12)
    assert correlations.mean_pair_correlation(np.ones((4, 3))) == 1.0


def test_subsampling_keeps_at_most_max_rows():
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(50, 4))
    gen = np.random.default_rng(7)
    got = correlations.mean_pair_correlation(rows, max_rows=20, rng=gen)
    pick = np.sort(np.random.default_rng(7).choice(50, size=20, replace=False))
    assert got == pytest.approx(_reference_mean_corr(rows[pick]), rel=1e-12)


def test_kernel_row_sets_follow_the_torch_layout():
    rng = np.random.default_rng(3)
    torch_w = rng.normal(size=(5, 3, 3, 3))  # (out, in, kh, kw)
    flax_k = torch_w.transpose(2, 3, 1, 0)  # (kh, kw, in, out)
    got = correlations.layer_correlations(flax_k)
    assert got["forward"] == pytest.approx(_reference_mean_corr(torch_w.reshape(5, -1)),
                                           rel=1e-12)
    backward = torch_w.transpose(1, 0, 2, 3).reshape(3, -1)
    assert got["backward"] == pytest.approx(_reference_mean_corr(backward), rel=1e-12)
    assert got["correlations"] == pytest.approx(_reference_mean_corr(torch_w.reshape(15, 9)),
                                                rel=1e-12)
    dense = rng.normal(size=(4, 6))  # flax (in, out) = torch (out, in)ᵀ
    got = correlations.layer_correlations(dense)
    assert set(got) == {"forward", "backward"}
    assert got["forward"] == pytest.approx(_reference_mean_corr(dense.T), rel=1e-12)
    assert got["backward"] == pytest.approx(_reference_mean_corr(dense), rel=1e-12)


def test_weight_correlations_log_values_and_diversity():
    rng = np.random.default_rng(4)
    params = {"conv": {"kernel": rng.normal(size=(3, 3, 2, 4)), "bias": np.zeros(4)},
              "block": {"fc": {"kernel": rng.normal(size=(4, 3))}}}
    got = correlations.weight_correlations(params)
    rho_conv = correlations.layer_correlations(params["conv"]["kernel"])
    rho_fc = correlations.layer_correlations(params["block"]["fc"]["kernel"])
    assert got["conv/forward"] == pytest.approx(-math.log(abs(rho_conv["forward"])))
    assert got["block/fc/backward"] == pytest.approx(-math.log(abs(rho_fc["backward"])))
    assert "conv/correlations" in got and "block/fc/correlations" not in got
    assert not any(k.startswith("conv/bias") for k in got)
    expected = sum(math.log(math.sqrt(1 - r["backward"] ** 2)) for r in (rho_conv, rho_fc))
    assert got["diversity"] == pytest.approx(expected, rel=1e-12)
