"""Weight correlations and diversity against np.corrcoef."""

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
    # kernel rows of a dense layer have one element: no variance, NaN → 1 (the reference's value)
    assert got["correlations"] == 1.0
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
    assert "conv/correlations" in got and got["block/fc/correlations"] == 0.0  # −log 1
    assert not any(k.startswith("conv/bias") for k in got)
    expected = sum(math.log(math.sqrt(1 - r["backward"] ** 2)) for r in (rho_conv, rho_fc))
    assert got["diversity"] == pytest.approx(expected, rel=1e-12)


def test_constnet_run_logs_correlations_every_epoch(tfds_dir, tmp_path):
    """A tiny ConstNet run writes corr/* once per evaluation, equal to the final weights'."""
    import jax
    import ml_collections

    from configs.constnet import wrn
    from gnj import checkpoint, train
    from gnj.metrics import read_jsonl

    c = wrn.get_config("constnet,runlocal")
    assert c.analysis.correlations_every_steps == c.eval_every_steps > 0
    assert wrn.get_config("constnet").analysis.correlations_every_steps == 50_000 // 128
    c.dataset.data_dir = tfds_dir
    c.quiet = True
    c.num_steps, c.eval_every_steps, c.log_every_steps = 4, 2, 2
    c.analysis.correlations_every_steps = 2
    train.train_and_evaluate(c, str(tmp_path))
    records = read_jsonl(str(tmp_path / "metrics.jsonl"))
    with_corr = [r for r in records if "corr/diversity" in r]
    assert [r["step"] for r in with_corr] == [2, 4]
    last = with_corr[-1]
    # The final checkpoint holds the weights the hook saw at step 4.
    exp = train.build_experiment(ml_collections.ConfigDict(c))
    params = jax.device_get(checkpoint.restore_variables_into(exp.state, str(tmp_path)).params)
    stem = [k for k in last if k.startswith("corr/") and k.endswith("/forward")][0]
    layer = stem[len("corr/"):-len("/forward")]
    kernel = params
    for part in layer.split("/"):
        kernel = kernel[part]
    kernel = np.asarray(kernel["kernel"], np.float64)
    torch_w = np.moveaxis(np.moveaxis(kernel, -1, 0), -1, 1)  # (out, in, kh, kw)
    rho = _reference_mean_corr(torch_w.reshape(torch_w.shape[0], -1))
    assert last[stem] == pytest.approx(-math.log(abs(rho)), rel=1e-6)
    kernels = [k for k in jax.tree_util.tree_flatten_with_path(params)[0]
               if str(getattr(k[0][-1], "key", "")) == "kernel"]
    assert sum(k.endswith("/backward") for k in last) == len(kernels)
    expected = correlations.weight_correlations(params)
    for key, value in expected.items():
        got = last[f"corr/{key}"]
        assert (math.isnan(got) and not math.isfinite(value)) or got == pytest.approx(value)


def _reference_cross(a_rows, b_rows):
    """The reference's cross_correllation: mean cosine of all row pairs, NaN → 1."""
    if a_rows.shape[1] != b_rows.shape[1]:
        return math.nan
    c = np.zeros((len(a_rows), len(b_rows)))
    for i, a in enumerate(a_rows):
        for j, b in enumerate(b_rows):
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            c[i, j] = 1.0 if na == 0 or nb == 0 else a @ b / (na * nb)
    return c.mean()


def test_cross_correlation_between_two_layers():
    rng = np.random.default_rng(5)
    w1, w2 = rng.normal(size=(6, 4, 3, 3)), rng.normal(size=(5, 4, 3, 3))  # torch (out, in, k, k)
    w2[1] = 0.0  # a zero row: cosine NaN → 1
    k1, k2 = w1.transpose(2, 3, 1, 0), w2.transpose(2, 3, 1, 0)
    got = correlations.cross_correlation(k1, k2)
    assert got == pytest.approx(_reference_cross(w1.reshape(6, -1), w2.reshape(5, -1)), rel=1e-12)
    w3 = rng.normal(size=(6, 7, 3, 3))  # backward rows of length out·k·k: 6·9 for w1 and w3
    got = correlations.cross_correlation(k1, w3.transpose(2, 3, 1, 0), forward=False)
    expected = _reference_cross(w1.transpose(1, 0, 2, 3).reshape(4, -1),
                                w3.transpose(1, 0, 2, 3).reshape(7, -1))
    assert got == pytest.approx(expected, rel=1e-12)
    assert math.isnan(correlations.cross_correlation(k1, w3.transpose(2, 3, 1, 0)))
    # a dense kernel (in, out) has torch rows (out, in)
    d1, d2 = rng.normal(size=(8, 3)), rng.normal(size=(8, 5))
    assert correlations.cross_correlation(d1, d2) == pytest.approx(
        _reference_cross(d1.T, d2.T), rel=1e-12)
    params = {"a": {"kernel": k1}, "b": {"kernel": k2}, "a_bias": {"bias": np.ones(3)}}
    pairs = correlations.cross_correlations(params)
    assert set(pairs) == {"a~a", "a~b", "b~b"}
    assert pairs["a~b"] == pytest.approx(correlations.cross_correlation(k1, k2))
    with pytest.raises(ValueError, match=r"no kernel at \['c'\]; layers with kernels: \['a', 'b"):
        correlations.cross_correlations(params, ["a", "c"])
    hook = correlations.build_hook(
        {"analysis": {"cross_correlation_layers": "a, b"}, "seed": 0})
    state = type("State", (), {"params": params})()
    logged = hook(state, {})
    assert logged["corr/cross/a~b"] == pytest.approx(pairs["a~b"])
    assert "corr/a/forward" in logged and "corr/diversity" in logged
