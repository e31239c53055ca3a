"""``--mode=analyze`` end to end, and the plots."""

import json

import jax
import ml_collections
import numpy as np
import pytest

from gnj.analysis import figures, hooks, run


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


def test_plots_write_pngs(tmp_path):
    nodes = np.abs(np.random.default_rng(0).normal(size=(2, 3, 5)))
    weights = np.full((2, 3, 5), 0.2)
    figures.plot_spectrum(nodes, weights, str(tmp_path / "s.png"), exact=nodes.ravel())
    moments = {f"b{i}": {"phi": 1.0 + 0.1 * i, "phi_se": 0.01, "spread": 0.1, "spread_se": 0.0}
               for i in range(4)}
    figures.plot_block_moments(moments, str(tmp_path / "m.png"))
    lines = [{"step": s, "grad_l2/a/kernel": 1.0 / s, "probe/c/grad_norm": 2.0 / s,
              "train/loss": 1.0} for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    figures.plot_grad_norms(str(tmp_path / "metrics.jsonl"), str(tmp_path / "g.png"))
    with pytest.raises(ValueError, match="no metric"):
        figures.plot_grad_norms(str(tmp_path / "metrics.jsonl"), str(tmp_path / "x.png"),
                              panels={"none": ("nothing", "y")})
    for name in ("s.png", "m.png", "g.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_settings_come_from_the_config_else_from_the_declared_defaults():
    from gnj import config_schema

    bare = ml_collections.ConfigDict(dict(model=dict(name="mlp")))
    for key in ("num_samples", "num_probes", "lanczos_steps", "spectrum_probes", "seed",
                "elu_derivative"):
        assert hooks.setting(bare, key) == config_schema.FIELDS[f"analysis.{key}"].default
    assert hooks.setting(bare, "lanczos_steps") == 20 and hooks.setting(bare, "num_probes") == 16
    some = ml_collections.ConfigDict(dict(analysis=dict(num_probes=3)))
    assert hooks.setting(some, "num_probes") == 3 and hooks.setting(some, "spectrum_probes") == 4


def test_analysis_hooks_selects_by_name_and_refuses_unknown_ones():
    config = ml_collections.ConfigDict(dict(analysis=dict(hooks=("jacobian",))))
    assert list(hooks.selected(config)) == ["jacobian"]
    as_text = ml_collections.ConfigDict(dict(analysis=dict(hooks="jacobian, jacobian")))
    assert list(hooks.selected(as_text)) == ["jacobian"]  # --config.analysis.hooks=a,b
    everything = hooks.selected(ml_collections.ConfigDict())
    assert "jacobian" in everything and "probes" not in everything  # train-time: not analyze
    config.analysis.hooks = ("nope",)
    with pytest.raises(ValueError, match="unknown analysis \\['nope'\\]; valid: .*jacobian"):
        hooks.selected(config)


def test_only_the_selected_hooks_run(tmp_path):
    config = ml_collections.ConfigDict(dict(analysis=dict(hooks=("jacobian",), num_samples=2)))
    from gnj.models import build

    model = build({"name": "mlp", "hidden": (3,)}, 2)
    images = jax.random.normal(jax.random.PRNGKey(0), (2, 2, 2, 1))
    v = model.init(jax.random.PRNGKey(1), images)
    result = run.run(config, str(tmp_path), images=images, variables=v, model=model)
    assert set(result) == {"num_samples", "blocks", "network", "spectrum", "source"}
