"""Name maps of the reference PyTorch code (GNEDNN: CIFAR ResNet with option-A shortcuts, serial
net, DenseNet, Fixup ResNet, MobileNetV1) for ``gnj.interop.convert``
(docs/proj/gne.md#converters).
"""

from __future__ import annotations

from typing import Any

from gnj.interop.convert import NameMap, register_name_map


@register_name_map("gne.resnet_cifar", "ResNetCifar", lambda model: model.shortcut != "B")
@register_name_map("gne.serial_net", "SerialNet")
def _gne_resnet(model: Any) -> NameMap:
    """GNEDNN ``cifar/models/resnet.py::ResNet`` and ``serial_net.py::serialNet``: conv1, norm1,
    layer{s}.{i}.{conv1, conv2, norm1, norm2}, linear (``block0`` / ``block`` repeat the same
    modules under a second name). Unused: the ResNet's ``bias2`` (read only by the Fixup-scalar
    net, ``fixup_resnet_cifar``, which this map does not cover)."""
    m = NameMap(modules={"conv1": "stem", "linear": "head"},
                unused=[r"block0\..*", r"layer\d\.\d+\.block\..*", "bias2"])
    m.norm("norm1", "stem_norm")
    for s in range(1, 4):
        for i in range((model.depth - 2) // 6):
            t, g = f"layer{s}.{i}", f"stage{s}_block{i}"
            for name in ("conv1", "conv2", "norm1", "norm2"):
                m.modules[f"{t}.{name}"] = f"{g}/{name}"
    return m


@register_name_map("gne.densenet", "DenseNetCifar")
def _gne_densenet(model: Any) -> NameMap:
    """GNEDNN ``cifar/models/densenet.py::DenseNet``: conv1, dense{s}.{i}.{conv1, conv2, norm1,
    norm2}, trans{s}.{conv, norm}, norm_last, linear (``block`` repeats the modules)."""
    m = NameMap(modules={"conv1": "stem", "linear": "head"},
                unused=[r"dense\d\.\d+\.block\..*", r"trans\d\.block\..*"])
    m.norm("norm_last", "final_norm")
    for s, n in enumerate(model.block_sizes, start=1):
        for i in range(n):
            for name in ("conv1", "conv2", "norm1", "norm2"):
                m.modules[f"dense{s}.{i}.{name}"] = f"dense{s}_{i}/{name}"
        m.modules[f"trans{s}.conv"] = f"trans{s}/conv"
        m.norm(f"trans{s}.norm", f"trans{s}/norm")
    return m


@register_name_map("gne.fixup_resnet", "FixupResNet")
def _gne_fixup_resnet(model: Any) -> NameMap:
    """GNEDNN ``imagenet/models/fixup_resnet.py`` (torchvision names): conv1, bias1, bias2,
    layer{s}.{i}.{conv1, conv2, conv3, downsample, bias1a, bias1b, …, scale}, fc."""
    from gnj.models.resnet import ARCHS

    m = NameMap(modules={"conv1": "conv1", "fc": "fc"},
                tensors={"bias1": "params/bias1", "bias2": "params/bias2"})
    _, layers, _, _ = ARCHS[model.arch]
    scalars = ("bias1a", "bias1b", "bias2a", "bias2b", "bias3a", "bias3b", "scale")
    for s, n in enumerate(layers, start=1):
        for i in range(n):
            t, g = f"layer{s}.{i}", f"layer{s}_{i}"
            for name in ("conv1", "conv2", "conv3", "downsample"):
                m.modules[f"{t}.{name}"] = f"{g}/{name}"
            m.tensors.update({f"{t}.{k}": f"params/{g}/{k}" for k in scalars})
    return m


@register_name_map("gne.mobilenet_v1", "MobileNetV1")
def _gne_mobilenet(model: Any) -> NameMap:
    """GNEDNN ``imagenet/models/mobilenet.py``: model.0.{conv, norm} (stem), model.{i+1}.{conv_dw,
    norm1, conv_pw, norm2} (``dense``: .{conv, norm}), fc."""
    from gnj.models.mobilenet import BLOCKS

    m = NameMap(modules={"model.0.conv": "stem/conv", "fc": "head"})
    m.norm("model.0.norm", "stem/norm")
    for i in range(len(BLOCKS)):
        t, g = f"model.{i + 1}", f"block{i}"
        m.modules.update({f"{t}.conv": f"{g}/conv", f"{t}.conv_dw": f"{g}/dw/conv",
                          f"{t}.conv_pw": f"{g}/pw/conv"})
        for a, b in (("norm", "norm"), ("norm1", "dw/norm"), ("norm2", "pw/norm")):
            m.norm(f"{t}.{a}", f"{g}/{b}")
    return m
