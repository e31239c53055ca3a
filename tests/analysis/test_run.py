"""``--mode=analyze`` end to end, and the plots."""

import json

import jax
import ml_collections
import numpy as np
import pytest

from gnj.analysis import plots, run
from gnj.models import build


def test_analyze_cli_writes_json_and_plots(tfds_dir, tmp_path):
    from configs import default

    c = default.get_config("runlocal")
    c.dataset.data_dir = tfds_dir
    c.analysis.num_samples = 2
    c.analysis.num_probes = 2
    c.analysis.spectrum_probes = 2
    c.analysis.lanczos_steps = 4
    c.analysis.exact_max_bytes = 0  # everything matrix-free
    (tmp_path / "metrics.jsonl").write_text(  # as a run with probes on leaves it
        "".join(json.dumps({"step": s, "grad_l2/stem/kernel": 1.0 / s}) + "\n" for s in (1, 2)))
    result = run.run(c, str(tmp_path))
    assert result["source"] == "init" and len(result["blocks"]) == 3
    assert all(m["method"] == "hutchinson" for m in result["blocks"].values())
    assert result["network"]["method"] == "hutchinson"
    saved = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    assert saved["blocks"].keys() == result["blocks"].keys()
    net = saved["spectrum"]["network"]
    assert net["method"] == "slq" and np.asarray(net["nodes"]).shape == (2, 2, 4)
    for name in ("phi_by_block.png", "spectrum.png", "grad_norms.png"):
        assert (tmp_path / "analysis" / name).stat().st_size > 1000


def test_analyze_given_model_variables_and_images_dense_mlp(tmp_path):
    config = ml_collections.ConfigDict(dict(analysis=dict(num_samples=3, num_probes=4,
                                                          elu_derivative="reference")))
    model = build({"name": "dense_mlp", "width": 4, "depth": 4, "tc": 3}, 3)
    images = jax.random.normal(jax.random.PRNGKey(0), (5, 2, 3, 1))
    v = model.init(jax.random.PRNGKey(1), images)
    result = run.run(config, str(tmp_path), images=images, variables=v, model=model)
    assert result["source"] == "given" and result["num_samples"] == 3
    assert list(result["blocks"]) == ["layer0", "layer1", "layer2", "layer3"]
    assert all(m["method"] == "exact" for m in result["blocks"].values())  # tiny: exact
    assert result["ldi"]["elu_derivative"] == "reference" and result["ldi"]["ldi_mean"] > 0
    # NN-Mass ρ·w·d: links min(3, 4) + min(3, 8) over paths 4 + 8 → ρ = 0.5.
    assert result["nn_mass"] == pytest.approx(0.5 * 4 * 4)
    # next to it, as the reference logs them: layers (in → out) 6→4, 4→4, 7→4, 7→3;
    # params Σ in·out + out, FLOPs Σ 2·in·out + out
    assert result["params"] == 89 + 15 and result["flops"] == 2 * 89 + 15
    # The network Jacobian fits: moments and spectrum both exact, from the same Jacobians.
    net = result["spectrum"]["network"]
    assert result["network"]["method"] == "exact" and net["method"] == "exact"
    assert net["phi"] == pytest.approx(result["network"]["phi"], rel=1e-5)
    assert np.asarray(net["nodes"]).shape == (3, 1, 3)  # d = min(6 inputs, 3 classes)


def test_plots_write_pngs(tmp_path):
    nodes = np.abs(np.random.default_rng(0).normal(size=(2, 3, 5)))
    weights = np.full((2, 3, 5), 0.2)
    plots.plot_spectrum(nodes, weights, str(tmp_path / "s.png"), exact=nodes.ravel())
    moments = {f"b{i}": {"phi": 1.0 + 0.1 * i, "phi_se": 0.01, "spread": 0.1, "spread_se": 0.0}
               for i in range(4)}
    plots.plot_block_moments(moments, str(tmp_path / "m.png"))
    lines = [{"step": s, "grad_l2/a/kernel": 1.0 / s, "probe/c/grad_norm": 2.0 / s,
              "train/loss": 1.0} for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    plots.plot_grad_norms(str(tmp_path / "metrics.jsonl"), str(tmp_path / "g.png"))
    with pytest.raises(ValueError, match="no metric"):
        plots.plot_grad_norms(str(tmp_path / "metrics.jsonl"), str(tmp_path / "x.png"),
                              panels={"none": ("nothing", "y")})
    plots.plot_ldi_vs_mass([{"nn_mass": 20.0, "ldi_mean": 0.9, "ldi_std": 0.2},
                            {"nn_mass": 10.0, "ldi_mean": 0.7, "ldi_std": 0.3}],
                           str(tmp_path / "l.png"))
    for name in ("s.png", "m.png", "g.png", "l.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_settings_default_without_an_analysis_section():
    s = run.settings(ml_collections.ConfigDict(dict(model=dict(name="mlp"))))
    assert s["num_samples"] == 8 and s["num_probes"] == 16 and s["elu_derivative"] == "correct"
    s = run.settings(ml_collections.ConfigDict(dict(analysis=dict(num_probes=3))))
    assert s["num_probes"] == 3 and s["lanczos_steps"] == 32
