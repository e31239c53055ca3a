"""FLOPs as the NN-Mass reference counts them (2 per multiply-accumulate, 1 per bias addition),
against closed-form layer-by-layer counts written here."""

import pytest

from gnj.models import build
from gnj.models.flops import count_flops


def test_dense_mlp_flops_are_the_references():
    # the reference's Dense_MLP(8, 8, 10, input_dims=784) reports flops = 14,506:
    # layers 784→8, 8→8, then (8 + min(10, (j−1)·8))→8 for j = 2 … 6 and 18→10 for j = 7
    sizes = [(784, 8), (8, 8), (16, 8), (18, 8), (18, 8), (18, 8), (18, 8), (18, 10)]
    expected = sum(2 * i * o + o for i, o in sizes)
    assert expected == 14_506
    model = build({"name": "dense_mlp", "width": 8, "depth": 8, "tc": 10}, 10)
    assert count_flops(model, (28, 28, 1)) == expected


def test_resnet18_flops():
    # torchvision ResNet-18 at 224²: stem 7×7 at 112², then 3×3 convs at 56², 28², 14², 7²
    # (the first conv of stages 2–4 strided, plus its 1×1 downsample), fc 512→1000 with bias
    macs = 112 * 112 * 49 * 3 * 64
    cin = 64
    for planes, hw in ((64, 56), (128, 28), (256, 14), (512, 7)):
        for block in range(2):
            macs += hw * hw * 9 * cin * planes + hw * hw * 9 * planes * planes
            if block == 0 and cin != planes:
                macs += hw * hw * cin * planes
            cin = planes
    macs += 512 * 1000
    assert count_flops(build({"name": "resnet18"}, 1000), (224, 224, 3)) == 2 * macs + 1000


@pytest.mark.parametrize("depthwise", [False, True])
def test_dense_cnn_flops(depthwise):
    # 2 cells of 4 layers, widths 4 and 8, tc (2, 4), 8×8 input → 8×8 then 4×4 maps;
    # linked layers read w + min(tc, (j−1)·w) channels; head: 2×2 pool of 4×4·8 → fc 32→10
    def conv_depth(hw_in, hw_out, cin, w):  # 1×1 at the input size, depthwise 3×3, 1×1
        return hw_in * cin * w + hw_out * 9 * w + hw_out * w * w

    macs, cin = 0, 3
    for k, (w, tc) in enumerate(((4, 2), (8, 4))):
        hw_in, hw = (64, 64) if k == 0 else (64, 16)
        for j in range(4):
            fan = (cin if j == 0 else w) + (min(tc, (j - 1) * w) if j >= 2 else 0)
            if depthwise and (k > 0 or j > 0):
                macs += conv_depth(hw_in if j == 0 else hw, hw, fan, w)
            else:
                macs += hw * 9 * fan * w
        cin = w
    macs += 32 * 10
    model = build({"name": "dense_cnn_depthwise" if depthwise else "dense_cnn",
                   "cell_depth": 4, "wm": 0.25, "tc": (2, 4), "num_cells": 2}, 10)
    assert count_flops(model, (8, 8, 3)) == 2 * macs + 10
