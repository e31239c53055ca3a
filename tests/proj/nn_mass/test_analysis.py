"""The NN-Mass paper's analysis hooks: LDI of the dense MLP, NN-Mass with params and FLOPs in
``--mode=analyze``, and the LDI-vs-NN-Mass sweep plot."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gnj.analysis import figures as figures_lib
from gnj.analysis import ldi, plots
from gnj.analysis import run as analysis_run
from gnj.models import build
from gnj.proj.nn_mass import analysis
from tests.analysis.test_ldi import chain_layers, two_layer_elu_chain

PNG = b"\x89PNG\r\n\x1a\n"
ELU = lambda z: np.where(z > 0, z, np.exp(z) - 1)
D_ELU = {"correct": lambda z: np.where(z > 0, 1.0, np.exp(z)),
         "reference": lambda z: np.where(z > 0, np.exp(z), 0.0)}  # the reference's derivative


@pytest.fixture
def saved_figures(monkeypatch):
    """(figure, path) of every figure saved, in order (inspectable after ``plt.close``)."""
    saved = []
    save = figures_lib.save_figure
    monkeypatch.setattr(figures_lib, "save_figure",
                        lambda fig, path: saved.append((fig, path)) or save(fig, path))
    return saved


def _write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _analysis(path, **result):
    path.mkdir(parents=True, exist_ok=True)
    (path / "analysis.json").write_text(json.dumps(result))


def test_cli_on_a_sweep_writes_grad_norms_per_run_and_ldi_vs_mass(tmp_path, saved_figures, capsys):
    root = tmp_path / "sweep"
    ldi = {("tc10", 0): (16.0, 0.8, 0.3), ("tc10", 1): (16.0, 0.9, 0.2),
           ("tc2", 0): (4.0, 0.6, 0.5)}
    for (variant, rep), (mass, mean, std) in ldi.items():
        wd = root / variant / str(rep)
        wd.mkdir(parents=True)
        (wd / "config.json").write_text("{}")
        _write_jsonl(wd / "metrics.jsonl", [{"step": 1, "train/loss": 1.0}])
        _analysis(wd / "analysis", ldi={"ldi_mean": mean, "ldi_std": std}, nn_mass=mass)
    # A run with gradient norms but no LDI (e.g. a ResNet): a grad plot, no LDI point.
    other = root / "resnet" / "0"
    _write_jsonl(other / "metrics.jsonl", [{"step": 1, "grad_l2/stem/kernel": 0.5}])
    _analysis(other / "analysis", blocks={}, network={"phi": 1.0})
    assert plots.main([str(root)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {other / 'analysis' / 'grad_norms.png'}" in printed
    assert (other / "analysis" / "grad_norms.png").read_bytes()[:8] == PNG
    png = root / "analysis" / "ldi_vs_mass.png"
    assert png.read_bytes()[:8] == PNG and f"wrote {png}" in printed
    points = json.loads((root / "analysis" / "ldi_vs_mass.json").read_text())
    assert {(p["run"], p["nn_mass"], p["ldi_mean"], p["ldi_std"]) for p in points} == {
        (f"{v}/{r}", *vals) for (v, r), vals in ldi.items()}
    fig, path = saved_figures[-1]
    assert path == str(png)
    ax = fig.axes[0]
    expected = sorted(ldi.values())  # by NN-Mass, then LDI
    xy = ax.lines[0].get_xydata()
    assert sorted(map(tuple, xy)) == [(m, mean) for m, mean, _ in expected]
    # Error bars: ±std around each point.
    segments = ax.containers[0].lines[2][0].get_segments()
    bars = sorted((s[0][0], s[0][1], s[1][1]) for s in segments)
    np.testing.assert_allclose(bars, [(m, mean - std, mean + std) for m, mean, std in expected],
                               rtol=1e-12)


@pytest.mark.slow  # end-to-end run: make test-all
def test_cli_analyze_runs_the_analysis_of_a_tiny_nn_mass_sweep(tfds_dir, tmp_path, saved_figures):
    from configs.nn_mass import mlp
    from gnj import train

    root = tmp_path / "mlp_tc"
    for tc in (0, 3):
        c = mlp.get_config(f"readme,tc{tc},runlocal")
        c.dataset.data_dir = tfds_dir
        c.analysis.num_samples = 4
        train.check_workdir(c, str(root / f"readme__tc{tc}__runlocal" / "0"))  # config.json
        loaded = plots.load_config(str(root / f"readme__tc{tc}__runlocal" / "0"))
        assert loaded.model.to_dict() == c.model.to_dict()
    assert plots.main([str(root), "--analyze"]) == 0
    points = {p["run"]: p for p in json.loads((root / "analysis" / "ldi_vs_mass.json")
                                              .read_text())}
    # Width 4, depth 4: tc 0 has no long-range links (NN-Mass 0); tc 3 has min(3, 4) + min(3, 8)
    # links over 4 + 8 candidates, ρ = 1/2, NN-Mass ρ·w·d = 8 (runlocal clamps tc to 3).
    assert points["readme__tc0__runlocal/0"]["nn_mass"] == 0.0
    assert points["readme__tc3__runlocal/0"]["nn_mass"] == pytest.approx(8.0)
    for name, p in points.items():
        result = json.loads((root / name / "analysis" / "analysis.json").read_text())
        assert result["source"] == "init" and result["num_samples"] == 4
        assert p["ldi_mean"] == result["ldi"]["ldi_mean"] > 0
    by_path = {path: fig for fig, path in saved_figures}
    xy = by_path[str(root / "analysis" / "ldi_vs_mass.png")].axes[0].lines[0].get_xydata()
    assert sorted(map(tuple, xy)) == sorted((p["nn_mass"], p["ldi_mean"])
                                            for p in points.values())
    assert (root / "analysis" / "compare.png").read_bytes()[:8] == PNG  # 2 runs with blocks



def test_analyze_given_model_variables_and_images_dense_mlp(tmp_path):
    config = ml_collections.ConfigDict(dict(analysis=dict(num_samples=3, num_probes=4,
                                                          elu_derivative="reference")))
    model = build({"name": "dense_mlp", "width": 4, "depth": 4, "tc": 3}, 3)
    images = jax.random.normal(jax.random.PRNGKey(0), (5, 2, 3, 1))
    v = model.init(jax.random.PRNGKey(1), images)
    result = analysis_run.run(config, str(tmp_path), images=images, variables=v, model=model)
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


@pytest.mark.parametrize("quirk", ["correct", "reference"])
def test_ldi_of_dense_mlp_matches_numpy(quirk):
    from gnj.proj.nn_mass import dense_mlp

    model = build({"name": "dense_mlp", "width": 4, "depth": 4, "tc": 3, "topology_seed": 1}, 3)
    x = np.random.default_rng(0).normal(size=(5, 6))
    with jax.enable_x64(True):
        v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 6)))
        v = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), v)  # params are float32
        got = ldi.ldi(analysis.dense_mlp_jacobians(model, v, jnp.asarray(x), quirk))
    p = jax.tree.map(np.asarray, v["params"])
    d = D_ELU[quirk]
    W = lambda j: p[f"layer{j}"]["kernel"].T
    links = dense_mlp.sample_links(4, 4, 3, 1)
    svs = []
    for xi in x:
        z0 = W(0) @ xi + p["layer0"]["bias"]
        o = [ELU(z0), None]
        o[1] = W(1) @ o[0] + p["layer1"]["bias"]
        jac = [np.diag(d(z0)) @ W(0), W(1)]
        for j in (2, 3):
            pool = np.concatenate(o[j - 2::-1])
            inp = np.concatenate([o[j - 1], pool[links[j - 2]]])
            jac.append(W(j) @ np.diag(d(inp)))  # the last layer too (reference convention)
            o.append(W(j) @ (inp if j == 3 else ELU(inp)) + p[f"layer{j}"]["bias"])
        svs.extend(np.concatenate([np.linalg.svd(J, compute_uv=False) for J in jac]))
    np.testing.assert_allclose(got["ldi_mean"], np.mean(svs), rtol=1e-10)
    np.testing.assert_allclose(got["ldi_std"], np.std(svs, ddof=1), rtol=1e-10)


@pytest.mark.parametrize("quirk", ["correct", "reference"])
def test_ldi_of_a_two_layer_elu_chain_matches_numpy(quirk):
    chain, svs = two_layer_elu_chain(D_ELU[quirk])
    with jax.enable_x64(True):
        got = ldi.ldi(ldi.layer_jacobians(chain_layers(chain), analysis.derivative("elu", quirk)))
    assert got["ldi_mean"] == pytest.approx(svs.mean(), rel=1e-12)
    assert got["ldi_std"] == pytest.approx(svs.std(ddof=1), rel=1e-12)


def test_the_reference_elu_derivative_differs_from_the_correct_one():
    z = jnp.array([-1.0, 0.5])
    np.testing.assert_allclose(analysis.derivative("elu")(z), [np.exp(-1.0), 1.0], rtol=1e-6)
    np.testing.assert_allclose(analysis.derivative("elu", "reference")(z), [0.0, np.exp(0.5)],
                               rtol=1e-6)
    np.testing.assert_allclose(analysis.derivative("tanh", "reference")(z), 1 - np.tanh(z) ** 2,
                               rtol=1e-6)  # only the ELU's
    with pytest.raises(ValueError, match="elu_derivative 'buggy'; valid: correct, reference"):
        analysis.derivative("elu", "buggy")


def test_ldi_vs_mass_plot_writes_a_png(tmp_path):
    analysis.plot_ldi_vs_mass([{"nn_mass": 20.0, "ldi_mean": 0.9, "ldi_std": 0.2},
                               {"nn_mass": 10.0, "ldi_mean": 0.7, "ldi_std": 0.3}],
                              str(tmp_path / "l.png"))
    assert (tmp_path / "l.png").read_bytes()[:8] == PNG


def test_the_hooks_return_nothing_for_other_models():
    from gnj.analysis.hooks import AnalysisContext

    model = build({"name": "mlp", "hidden": (3,)}, 2)
    images = jnp.zeros((2, 2, 2, 1))
    ctx = AnalysisContext(model, model.init(jax.random.PRNGKey(0), images), images,
                          ml_collections.ConfigDict(), np.random.default_rng(0))
    assert analysis.ldi(ctx) == {} and analysis.nn_mass(ctx) == {}


def test_report_shows_nn_mass_params_and_flops_columns(tmp_path):
    from gnj import report

    for rep, (mass, params, flops) in enumerate([(32.0, 104, 193), (32.0, 104, 195)]):
        wd = tmp_path / "mlp" / str(rep) / "analysis"
        wd.mkdir(parents=True)
        (wd / "analysis.json").write_text(json.dumps(
            {"nn_mass": mass, "params": params, "flops": flops}))
    rows = {r["run"]: r for r in report.report(str(tmp_path), plots=False)}
    assert rows["mlp"]["params"] == 104 and rows["mlp"]["flops"] == 194
    md = (tmp_path / "report" / "results.md").read_text()
    assert "| NN-Mass | params | FLOPs |" in md and "| 32.0 | 104 | 194 |" in md
