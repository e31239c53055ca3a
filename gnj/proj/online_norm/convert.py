"""Name maps of the reference PyTorch code (Online Normalization's CIFAR ResNet and MLP) for
``gnj.interop.convert``; an OnlineNorm2d's streams ``norm.{m, var, u, v}`` land in
``batch_stats`` / ``backward_state`` (docs/proj/online_norm.md#converters).
"""

from __future__ import annotations

from typing import Any

from gnj.interop.convert import NameMap, register_name_map


@register_name_map("online_norm.resnet_cifar", "ResNetCifar", lambda model: model.shortcut == "B")
def _online_norm_resnet(model: Any) -> NameMap:
    """Online Normalization ``experiments/resnet`` ResNet with ``cifar=True`` and option-B
    shortcuts (1×1 conv + norm; torchvision's names): conv1, bn1, layer{s}.{i}.{conv1, bn1,
    conv2, bn2, downsample.0 (1×1 conv), downsample.1 (norm)}, fc; an OnlineNorm2d keeps its
    streams in ``.norm``."""
    m = NameMap(modules={"conv1": "stem", "fc": "head"})
    m.norm("bn1", "stem_norm")
    m.norm("bn1.norm", "stem_norm")
    for s in range(1, 4):
        for i in range((model.depth - 2) // 6):
            t, g = f"layer{s}.{i}", f"stage{s}_block{i}"
            m.modules.update({f"{t}.conv1": f"{g}/conv1", f"{t}.conv2": f"{g}/conv2",
                              f"{t}.downsample.0": f"{g}/shortcut_conv"})
            for a, b in (("bn1", "norm1"), ("bn2", "norm2"), ("downsample.1", "shortcut_norm")):
                m.norm(f"{t}.{a}", f"{g}/{b}")
                m.norm(f"{t}.{a}.norm", f"{g}/{b}")
    return m


@register_name_map("online_norm.mlp", "MLP")
def _online_norm_mlp(model: Any) -> NameMap:
    """Online Normalization ``experiments/mlp`` ``MLP_Model``: in_layer, hidden_layers.{i},
    out_layer, each an ``MLP_Layer`` with ``fc`` (no bias: the reference's bias test never
    fires) and ``norm`` (none on the out layer)."""
    hidden = [f"hidden_layers.{i}" for i in range(len(model.hidden) - 1)]
    m = NameMap(modules={"out_layer.fc": "head"})
    for i, t in enumerate(["in_layer", *hidden]):
        m.modules[f"{t}.fc"] = f"layer{i}/dense"
        m.norm(f"{t}.norm", f"layer{i}/norm")
    return m
