"""NN-Mass dense nets (dense_cnn, dense_cnn_depthwise, dense_mlp): closed-form parameter counts,
forwards against NumPy re-derivations, the reference's links and quirk options."""

import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.analysis import blocks
from gnj.models import build
from gnj.proj.nn_mass import dense_cnn, dense_mlp
from tests.models.test_zoo_part2 import _random_variables, bn, conv, n_params


def dense_cnn_count(cell_depth, widths, tcs, classes, depthwise, final_hw=4):
    def conv_depth(cin, w):
        return conv(cin, w, 1) + bn(w) + conv(w, w, 3, w) + bn(w) + conv(w, w, 1) + bn(w)

    total, cin = 0, 3
    for k, (w, tc) in enumerate(zip(widths, tcs)):
        # layers 0 and 1 end in the cell's norm whatever their type (the reference's norm_list)
        total += (conv_depth(cin, w) if (depthwise and k > 0) else conv(cin, w, 3)) + bn(w)
        total += (conv_depth(w, w) if depthwise else conv(w, w, 3)) + bn(w)
        for j in range(2, cell_depth):
            fan = w + min(tc, (j - 1) * w)
            total += bn(fan) + (conv_depth(fan, w) if depthwise else conv(fan, w, 3))
        cin = w
    return total + widths[-1] * final_hw**2 * classes + classes


@pytest.mark.parametrize("name,depthwise", [("dense_cnn", False), ("dense_cnn_depthwise", True)])
def test_dense_cnn_counts(name, depthwise):
    m = build({"name": name, "cell_depth": 13, "wm": 2, "tc": (40, 80, 125)}, 10)
    assert n_params(m, (32, 32, 3)) == dense_cnn_count(13, (32, 64, 128), (40, 80, 125), 10,
                                                       depthwise)


def test_dense_cnn_depthwise_count_is_the_references():
    # the reference's depth_wise_dense_cnn(13, 2, [40, 80, 125]) has 867,656 parameters (its
    # release log; also the count of its module built with torch)
    assert n_params(build({"name": "dense_cnn_depthwise"}, 10), (32, 32, 3)) == 867_656


def test_dense_cnn_other_input_sizes():
    # avgpool2 head: a 64×64 input leaves 8×8 per channel (flatten length 16× larger than 32×32
    # would give ×4 → 8·8); the global head has w_last inputs
    kw = {"name": "dense_cnn", "cell_depth": 4, "wm": 1, "tc": (3, 3, 3)}
    base = dense_cnn_count(4, (16, 32, 64), (3, 3, 3), 10, False, final_hw=8)
    assert n_params(build(kw, 10), (64, 64, 3)) == base
    glob = base - 64 * 64 * 10 + 64 * 10
    assert n_params(build({**kw, "head": "global"}, 10), (64, 64, 3)) == glob
    assert n_params(build({**kw, "head": "global"}, 10), (24, 40, 3)) == glob


def test_dense_mlp_count():
    # 784-input MNIST MLP w8 d8 tc10: linked layers take 8, 10, 10, 10, 10, 10 extra inputs
    links = [8, 10, 10, 10, 10, 10]
    outs = [8] * 5 + [10]
    expected = 784 * 8 + 8 + 8 * 8 + 8 + sum((8 + t) * o + o for t, o in zip(links, outs))
    assert expected == 7286
    assert n_params(build({"name": "dense_mlp", "width": 8, "depth": 8, "tc": 10}, 10),
                    (28, 28, 1)) == expected


# ------------------------------------------------------------------------------------------------
# Dense MLP (docs/proj/nn_mass.md#dense-mlp): forward vs NumPy, links, blocks


def _elu(z):
    return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))


def test_dense_mlp_forward_matches_numpy_reference():
    w, d, tc, seed = 3, 6, 4, 5
    m = build({"name": "dense_mlp", "width": w, "depth": d, "tc": tc, "topology_seed": seed}, 2)
    x = np.random.default_rng(0).normal(size=(4, 2, 2, 2))
    v = _random_variables(m, (2, 2, 2), 1)
    with jax.enable_x64(True):
        y = np.asarray(jax.jit(m.apply)(v, jnp.asarray(x)))
    p = v["params"]
    links = m.links()
    L = lambda i, z: z @ p[f"layer{i}"]["kernel"] + p[f"layer{i}"]["bias"]
    # o0 = φ(L0 x); o1 = L1 o0; feat0 = o0, feat1 = [o1, o0]; layer j = i + 2 reads
    # [o_{j−1}, feat_i[:, links_j]] and feat_{i+2} = [o_j, feat_{i+1}]
    o0 = _elu(L(0, x.reshape(4, -1)))
    o1 = L(1, o0)
    feat = [o0, np.concatenate([o1, o0], 1)]
    prev = o1
    for i in range(d - 2):
        j = i + 2
        inp = np.concatenate([prev, feat[i][:, links[i]]], 1)
        prev = L(j, inp) if j == d - 1 else L(j, _elu(inp))
        feat.append(np.concatenate([prev, feat[i + 1]], 1))
    np.testing.assert_allclose(y, prev, rtol=1e-12, atol=1e-12)


def test_dense_mlp_links_are_seeded_clamped_and_in_range():
    m = build({"name": "dense_mlp", "width": 4, "depth": 6, "tc": 6, "topology_seed": 3}, 2)
    links = m.links()
    assert [len(k) for k in links] == [4, 6, 6, 6]  # min(6, (j−1)·4), j = 2 … 5
    for j, k in enumerate(links, start=2):
        assert len(set(k.tolist())) == len(k) and k.min() >= 0 and k.max() < (j - 1) * 4
    again = build({"name": "dense_mlp", "width": 4, "depth": 6, "tc": 6, "topology_seed": 3}, 2)
    other = build({"name": "dense_mlp", "width": 4, "depth": 6, "tc": 6, "topology_seed": 4}, 2)
    assert all((a == b).all() for a, b in zip(links, again.links()))
    assert any(a.shape != b.shape or (a != b).any() for a, b in zip(links, other.links()))
    rows = m.structure(16)
    assert [r["inp"] for r in rows] == [16, 4, 8, 10, 10, 10]
    assert [r["out"] for r in rows] == [4, 4, 4, 4, 4, 2]


def test_dense_mlp_reference_default_tc_needs_strict_off():
    with pytest.raises(ValueError, match="dense_mlp: tc 20 exceeds the largest link pool"):
        build({"name": "dense_mlp", "tc": 20}, 10).init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    loose = build({"name": "dense_mlp", "tc": 20, "strict_tc": False}, 10)
    assert n_params(loose, (4,)) == n_params(build({"name": "dense_mlp"}, 10), (4,))


def test_dense_mlp_blocks_give_the_ldi_layer_jacobians():
    """Each layer is a block; its Jacobian at its real input is diag(φ′(left))·W·diag(φ′(right))
    from ``layer_jacobian_factors`` (φ′ of ELU: 1 for z > 0, eᶻ otherwise), except the last layer,
    whose forward has no φ (LDI's convention puts φ′ on its input anyway)."""
    m = build({"name": "dense_mlp", "width": 3, "depth": 5, "tc": 2, "topology_seed": 1}, 2)
    v = _random_variables(m, (5,), 0)
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5)))
        ins = blocks.block_inputs(m, v, x)
        facs = dense_mlp.layer_jacobian_factors(m, v, x)
        assert list(ins) == [f"layer{j}" for j in range(5)]
        dphi = lambda z: np.where(z > 0, 1.0, np.exp(z))
        for j, (name, z) in enumerate(ins.items()):
            f = blocks.block_function(m, v, x[:1], name)
            jac = np.asarray(jax.jacobian(lambda zi, f=f: f(zi[None])[0])(z[0]))
            fac = facs[j]
            expect = np.asarray(fac.kernel)
            if fac.left is not None:
                expect = dphi(np.asarray(fac.left[0]))[:, None] * expect
            if fac.right is not None and j < 4:
                expect = expect * dphi(np.asarray(fac.right[0]))[None, :]
            np.testing.assert_allclose(jac, expect, rtol=1e-12, atol=1e-12)
            if j >= 2:  # the factor's right input is the block's own input
                np.testing.assert_allclose(fac.right, z, rtol=0, atol=0)
        assert facs[4].right is not None and facs[1].left is None and facs[1].right is None


# ------------------------------------------------------------------------------------------------
# Dense CNNs (docs/proj/nn_mass.md#dense-cnn): forward vs NumPy with random norm statistics


def np_conv(x, k, stride=1, groups=1):
    kh = k.shape[0]
    p = kh // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    n, h, w, c = x.shape
    ho, wo = (h + 2 * p - kh) // stride + 1, (w + 2 * p - kh) // stride + 1
    cg, og = c // groups, k.shape[-1] // groups
    out = np.zeros((n, ho, wo, k.shape[-1]))
    for g in range(groups):
        for a in range(kh):
            for b in range(kh):
                patch = xp[:, a:a + stride * ho:stride, b:b + stride * wo:stride,
                           g * cg:(g + 1) * cg]
                out[..., g * og:(g + 1) * og] += patch @ k[a, b, :, g * og:(g + 1) * og]
    return out


def np_dense_cnn(p, s, x, cell_depth, links, depthwise):
    relu = lambda z: np.maximum(z, 0)

    def norm(path, z):
        q, r = p, s
        for key in path:
            q, r = q[key], r[key]
        return (z - r["mean"]) / np.sqrt(r["var"] + 1e-5) * q["scale"] + q["bias"]

    def conv_depth(path, z, stride):
        q = p
        for key in path:
            q = q[key]
        w = q["pw1"]["kernel"].shape[-1]
        z = relu(norm(path + ["norm1"], np_conv(z, q["pw1"]["kernel"])))
        z = relu(norm(path + ["norm2"], np_conv(z, q["dw"]["kernel"], stride, w)))
        return norm(path + ["norm3"], np_conv(z, q["pw2"]["kernel"]))

    def op(name, z, stride, use_depth):
        if use_depth:
            return conv_depth([name, "conv_depth"], z, stride)
        return np_conv(z, p[name]["conv"]["kernel"], stride)

    for k in range(len(links)):
        n = lambda j, k=k: f"cell{k}_layer{j}"
        o0 = op(n(0), x, 1 if k == 0 else 2, depthwise and k > 0)
        outs = [norm([n(0), "post_norm"], o0)]  # the cell's norm follows layers 0, 1 always
        outs.append(norm([n(1), "post_norm"], op(n(1), relu(outs[0]), 1, depthwise)))
        for j in range(2, cell_depth):
            pool = np.concatenate(outs[::-1][:j - 1], -1)  # out_{j−1}, …, out_1 (predecessor in)
            inp = np.concatenate([outs[-1], pool[..., links[k][j - 2]]], -1)
            outs.append(op(n(j), relu(norm([n(j), "pre_norm"], inp)), 1, depthwise))
        x = outs[-1]
    nb, h, w, c = x.shape
    x = x[:, :h // 2 * 2, :w // 2 * 2].reshape(nb, h // 2, 2, w // 2, 2, c).mean((2, 4))
    return x.reshape(nb, -1) @ p["fc"]["kernel"] + p["fc"]["bias"]


@pytest.mark.parametrize("name,depthwise", [("dense_cnn", False), ("dense_cnn_depthwise", True)])
def test_dense_cnn_forward_matches_numpy(name, depthwise):
    m = build({"name": name, "cell_depth": 4, "wm": 0.25, "tc": (3, 6), "num_cells": 2,
               "topology_seed": 0}, 3)
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 3))
    v = _random_variables(m, (6, 6, 3), 2)
    with jax.enable_x64(True):
        y = np.asarray(jax.jit(m.apply)(v, jnp.asarray(x)))
    links = m.links()
    assert [[len(i) for i in c] for c in links] == [[3, 3], [6, 6]]  # min(tc, (j−1)·w)
    expect = np_dense_cnn(v["params"], v["batch_stats"], x, 4, links, depthwise)
    np.testing.assert_allclose(y, expect, rtol=1e-10, atol=1e-10)


def test_dense_cnn_links_are_the_references():
    # the first links of cell 0 (layers 2, 3) and of cell 2's last layer, as drawn by the
    # reference's depth_wise_dense_cnn(13, 2, [40, 80, 125]) (random.seed(2), random.sample)
    for name in ("dense_cnn", "dense_cnn_depthwise"):
        links = build({"name": name}, 10).links()
        assert links[0][0][:6].tolist() == [3, 2, 30, 11, 26, 5]
        assert links[0][1][:6].tolist() == [21, 35, 11, 15, 14, 1]
        assert links[2][10][:5].tolist() == [557, 1219, 35, 100, 1156]
    # re-derived: one random.Random(seed) stream, random.sample per layer, cell by cell, unsorted
    m = build({"name": "dense_cnn", "cell_depth": 5, "wm": 0.25, "tc": (2, 16), "num_cells": 2,
               "topology_seed": 7}, 3)
    stream = random.Random(7)
    expect = [stream.sample(range(p), k) for p, k in ((4, 2), (8, 2), (12, 2), (8, 8), (16, 16),
                                                      (24, 16))]
    assert [a.tolist() for cell in m.links() for a in cell] == expect


def test_dense_mlp_links_are_the_references_after_random_seed():
    # the reference's Dense_MLP(4, 6, 6) built right after random.seed(5) draws these links
    m = build({"name": "dense_mlp", "width": 4, "depth": 6, "tc": 6, "topology_seed": 5}, 3)
    assert [a.tolist() for a in m.links()] == [[2, 3, 1, 0], [7, 6, 1, 0, 5, 4],
                                               [5, 7, 3, 6, 1, 4], [7, 0, 11, 3, 6, 4]]
    with pytest.raises(ValueError, match="unknown link_sampler 'torch'; valid: python_random"):
        build({"name": "dense_mlp", "link_sampler": "torch"}, 3).links()


def test_dense_cnn_numpy_links_use_randomstate_and_include_predecessor():
    m = build({"name": "dense_cnn", "cell_depth": 5, "wm": 0.25, "tc": (2, 16), "num_cells": 2,
               "topology_seed": 7, "link_sampler": "numpy"}, 3)
    rs = np.random.RandomState(7)
    expect = [[np.sort(rs.choice(p, k, replace=False)) for p, k in ((4, 2), (8, 2), (12, 2))],
              [np.sort(rs.choice(p, k, replace=False)) for p, k in ((8, 8), (16, 16), (24, 16))]]
    for got_cell, exp_cell in zip(m.links(), expect):
        for a, b in zip(got_cell, exp_cell):
            np.testing.assert_array_equal(a, b)


def test_bn_eval_quirk_always_uses_running_stats():
    kw = {"name": "dense_cnn", "cell_depth": 3, "wm": 0.25, "tc": (2,), "num_cells": 1}
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 4, 4, 3)), jnp.float32)
    quirk = build({**kw, "bn_eval_quirk": True}, 3)
    v = quirk.init(jax.random.PRNGKey(0), x)
    y_train, upd = quirk.apply(v, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(y_train, quirk.apply(v, x, train=False), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(upd["batch_stats"]), jax.tree.leaves(v["batch_stats"])):
        np.testing.assert_array_equal(a, b)  # running stats stay 0 / 1
    fixed = build(kw, 3)
    y_fixed, upd = fixed.apply(v, x, train=True, mutable=["batch_stats"])
    assert not np.allclose(y_fixed, y_train)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(upd["batch_stats"]),
                                                        jax.tree.leaves(v["batch_stats"])))


def test_tc0_bn_bug_drops_the_norm_of_unlinked_layers():
    kw = {"name": "dense_cnn", "cell_depth": 4, "wm": 0.25, "tc": (0,), "num_cells": 1}
    x = jnp.zeros((1, 4, 4, 3))
    fixed = build(kw, 3).init(jax.random.PRNGKey(0), x)["params"]
    bug = build({**kw, "tc0_bn_bug": True}, 3).init(jax.random.PRNGKey(0), x)["params"]
    assert "pre_norm" in fixed["cell0_layer2"] and "pre_norm" not in bug["cell0_layer2"]
    assert fixed["cell0_layer2"]["conv"]["kernel"].shape == (3, 3, 4, 4)  # no links: w inputs


# ------------------------------------------------------------------------------------------------
# MobileNetV2 and ResNets: structure and init conventions


def test_dense_cnn_module_helpers():
    assert dense_cnn.cell_widths(2, 3) == [32, 64, 128]
    assert dense_cnn.cell_link_counts(32, 5, 40) == ([32, 64, 96], [32, 40, 40])
