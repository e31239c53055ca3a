"""Figures of training-time gradient norms and of analysed runs: the CLI writes the PNGs and the
plotted data is the data in the files."""

import json

import numpy as np
import pytest

from gnj.analysis import figures as figures_lib
from gnj.analysis import plots

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def figures(monkeypatch):
    """Every figure the plots save, in order (still inspectable after ``plt.close``)."""
    saved = []
    original = figures_lib.save_figure

    def keep(fig, path):
        saved.append((fig, path))
        return original(fig, path)

    monkeypatch.setattr(figures_lib, "save_figure", keep)
    return saved


def _write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _grad_records():
    keys_w = ["grad_l2/stem/kernel", "grad_l2/stage1_block2/conv/kernel",  # depth order
              "grad_l2/stage1_block10/conv/kernel", "grad_l2/head/kernel"]
    recs = []
    for s in (10, 20, 30):
        r = {"step": s, "train/loss": 2.0 / s, "train/grad_norm": 5.0}
        r.update({k: (i + 1) * 0.1 / s for i, k in enumerate(keys_w)})
        if s != 20:  # the conv-output probe logged on some records only
            r["probe/stem/grad_norm"] = 3.0 / s
        recs.append(r)
    return recs, keys_w


def test_grad_norm_plot_shows_exactly_the_logged_values(tmp_path, figures):
    recs, keys_w = _grad_records()
    _write_jsonl(tmp_path / "metrics.jsonl", recs)
    out = figures_lib.plot_grad_norms(str(tmp_path / "metrics.jsonl"), str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").read_bytes()[:8] == PNG and out == str(tmp_path / "g.png")
    (fig, _), = figures
    weights, convs = fig.axes
    # The file's (depth) order; train/grad_norm (global) is not a layer.
    assert [ln.get_label() for ln in weights.lines] == keys_w
    for line, key in zip(weights.lines, keys_w):
        np.testing.assert_array_equal(line.get_xydata(),
                                      [[r["step"], r[key]] for r in recs])
    (line,) = convs.lines
    np.testing.assert_array_equal(line.get_xydata(), [[10, 0.3], [30, 0.1]])
    assert weights.get_yscale() == convs.get_yscale() == "log"


def _analysis(path, **result):
    path.mkdir(parents=True, exist_ok=True)
    (path / "analysis.json").write_text(json.dumps(result))


def test_cli_with_nothing_to_plot_says_what_it_needs(tmp_path, capsys):
    _write_jsonl(tmp_path / "metrics.jsonl", [{"step": 1, "train/loss": 1.0}])
    assert plots.main([str(tmp_path)]) == 1
    assert "probe_every_steps" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no directory"):
        plots.main([str(tmp_path / "missing")])


def test_compare_plot_of_analysed_runs_shows_their_block_moments_and_spectra(tmp_path, figures):
    rng = np.random.default_rng(0)
    runs = {}
    for name, scale in (("km_relu", 1.0), ("orth_relu", 0.1)):
        blocks = {f"stage1_block{i}": {"phi": scale * (1 + 0.1 * i), "phi_se": 0.01 * i}
                  for i in range(12)}
        sv = scale * np.abs(rng.normal(size=(3, 1, 10))) + 1e-3
        if name == "orth_relu":
            sv[0, 0, :2] = 1e-30  # numerically zero: left out of the density, share in legend
        spec = {"nodes": sv.tolist(), "weights": np.full(sv.shape, 0.1).tolist()}
        runs[name] = dict(blocks=blocks, network={"phi": scale}, spectrum={"network": spec})
        _analysis(tmp_path / name / "analysis", **runs[name])
    assert plots.main([str(tmp_path)]) == 0
    (fig, path), = figures
    assert path == str(tmp_path / "analysis" / "compare.png")
    ax_phi, ax_sv = fig.axes
    assert ax_phi.get_yscale() == "log"
    for container, (name, run) in zip(ax_phi.containers, runs.items()):
        np.testing.assert_allclose(container.lines[0].get_ydata(),  # call (depth) order
                                   [b["phi"] for b in run["blocks"].values()])
        assert container.get_label() == f"{name} (network φ = {run['network']['phi']:.3g})"
    for line, run in zip(ax_sv.lines[:2], runs.values()):
        x, dens = line.get_xdata(), line.get_ydata()
        assert np.trapezoid(dens, x) == pytest.approx(1.0, abs=0.01)  # a density of log₁₀ σ
        # Its mean is the mean log₁₀ σ of the file's singular values (equal weights).
        nodes = np.asarray(run["spectrum"]["network"]["nodes"])
        mean_log = np.mean(np.log10(nodes[nodes > 1e-20]))
        assert np.trapezoid(dens * x, x) == pytest.approx(mean_log, abs=0.02)
    assert ax_sv.lines[1].get_label() == "orth_relu (7% of σ < 1e-06·max not shown)"  # 2 of 30
