"""Name maps of the reference PyTorch code (Beyond BatchNorm's VGG and ResNet-56) for
``gnj.interop.convert`` (docs/proj/beyond_bn.md#converters).
"""

from __future__ import annotations

from typing import Any

from gnj.interop.convert import NameMap, register_name_map


@register_name_map("beyond_bn.vgg", "VGG")
def _vgg(model: Any) -> NameMap:
    """Beyond-BN ``models.py::VGG``: features is [conv, probe, norm, act, probe] per layer
    (features.{5l}, .{5l+2} norm, .{5l+3} act: TLU τ / EvoNorm), classifier."""
    from gnj.models.vgg import resolve_cfg

    m = NameMap(modules={"classifier": "head"})
    for layer in range(len(resolve_cfg(model.cfg))):
        m.modules[f"features.{5 * layer}"] = f"layer{layer}/conv"
        m.norm(f"features.{5 * layer + 2}", f"layer{layer}/norm")
        m.norm(f"features.{5 * layer + 3}", f"layer{layer}/norm")
    return m


@register_name_map("beyond_bn.resnet56", "ResNet56Lubana")
def _lubana_resnet(model: Any) -> NameMap:
    """Beyond-BN ``models.py::ResNet_cifar``: conv1, norm1, layer{s}.{i}.{conv1, norm1, conv2,
    norm2, skip_gain, shortcut.*}, linear. Post-activation shortcut: shortcut.0 conv, .2 norm;
    pre-activation: shortcut.0 norm, .1 conv."""
    m = NameMap(modules={"conv1": "stem", "linear": "head"})
    m.norm("norm1", "stem_norm")
    m.norm("activ1", "stem_norm")  # an activation with parameters (TLU) is part of gnj's norm
    for s in range(1, 4):
        for i in range((model.depth - 2) // 6):
            t, g = f"layer{s}.{i}", f"stage{s}_block{i}"
            for name in ("conv1", "conv2", "norm1", "norm2"):
                m.modules[f"{t}.{name}"] = f"{g}/{name}"
            m.norm(f"{t}.activ1", f"{g}/norm1")
            m.norm(f"{t}.activ2", f"{g}/norm2")
            m.tensors[f"{t}.skip_gain"] = f"params/{g}/skip_gain"
            conv, norm = ("shortcut.1", "shortcut.0") if model.preact else ("shortcut.0",
                                                                           "shortcut.2")
            m.modules[f"{t}.{conv}"] = f"{g}/shortcut_conv"
            m.norm(f"{t}.{norm}", f"{g}/shortcut_norm")
    return m
