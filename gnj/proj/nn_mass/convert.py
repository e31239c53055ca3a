"""Name maps of the reference PyTorch code (NN-Mass dense CNNs and MLP) for ``gnj.interop.convert``.

The dense CNN's head also reorders its inputs from the reference's channel-major flatten of an
NCHW map to gnj's flatten of the NHWC map (docs/proj/nn_mass.md#converters).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gnj.interop.convert import NameMap, register_name_map


@register_name_map("nn_mass.dense_cnn", "DenseCNN")
@register_name_map("nn_mass.dense_cnn_depthwise", "DenseCNNDepthwise")
def _dense_cnn(model: Any) -> NameMap:
    """NN_Mass ``regular_dense_cnn`` / ``depth_wise_dense_cnn``: layer_list.{k·D + j} (a conv, or
    conv_depth's conv0/batch0/conv1/batch1/conv2/batch2), norm_list.{k·D + j} (after layers 0, 1;
    before linked layers), fc_layer (its input is the NCHW map flattened channel-major)."""
    d = model.cell_depth
    m = NameMap(modules={"fc_layer": "fc"})
    depthwise = model.kind == "depthwise"
    widths = model.widths()
    for k in range(len(widths)):
        for j in range(d):
            t, g = f"layer_list.{k * d + j}", f"cell{k}_layer{j}"
            if depthwise and (k > 0 or j > 0):
                for a, b in (("conv0", "pw1"), ("batch0", "norm1"), ("conv1", "dw"),
                             ("batch1", "norm2"), ("conv2", "pw2"), ("batch2", "norm3")):
                    m.modules[f"{t}.{a}"] = f"{g}/conv_depth/{b}"
            else:
                m.modules[t] = f"{g}/conv"
            m.norm(f"norm_list.{k * d + j}", f"{g}/{'post_norm' if j < 2 else 'pre_norm'}")
    c = widths[-1]

    def nchw_flatten(value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        out, hw = value.shape[0], value.shape[1] // c  # value (out, C·H·W), channel-major
        return value.reshape(out, c, hw).transpose(2, 1, 0).reshape(shape)

    m.transforms["fc_layer.weight"] = nchw_flatten
    return m


@register_name_map("nn_mass.dense_mlp", "DenseMLP")
def _dense_mlp(model: Any) -> NameMap:
    """NN_Mass ``Dense_MLP``: features.{j} → layer{j}; its ``batchnorm`` list is never used."""
    return NameMap(modules={f"features.{j}": f"layer{j}" for j in range(model.depth)},
                   unused=[r"batchnorm\..*"])
