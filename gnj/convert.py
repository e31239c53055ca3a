"""PyTorch state dicts of the reference code bases → gnj variables, one name map per model family.

``from_torch(model, variables, state_dict)`` returns ``variables`` (the gnj model's ``params``,
``batch_stats`` and Online Normalization's ``backward_state``) with every tensor replaced by the
matching tensor of a state dict laid out as the reference's PyTorch module (its attribute names;
``num_batches_tracked`` is dropped). The families are in :data:`FAMILIES`, each map's docstring
names the layout it reads (docs/parity.md: how they are checked); the torchvision ResNets and
MobileNetV2 go through ``gnj.pretrained``'s maps.
Tensor layouts:

- conv weight (O, I/g, kh, kw) → ``kernel`` (kh, kw, I/g, O); Linear weight (out, in) →
  ``kernel`` (in, out) (the NN-Mass dense CNN's head also reorders its inputs from the
  reference's channel-major flatten of an NCHW map to gnj's flatten of the NHWC map);
- norm weight / gamma → ``scale``, bias / beta → ``bias``, running_mean / moving_mean →
  ``batch_stats/…/mean``, running_var / moving_var → ``var``; FRN ``eps`` and TLU ``tau`` keep
  their names; Online Normalization's streams ``norm.m`` / ``norm.var`` → ``batch_stats``
  ``mean`` / ``var`` and ``norm.u`` / ``norm.v`` → ``backward_state`` ``u`` / ``v``;
  per-channel (1, C, 1, 1) and scalar (1,) tensors are reshaped to gnj's (C,) / ().

Tensors the reference creates but never uses are listed per family (``NameMap.unused``) and
skipped. Every gnj tensor must be covered and every other torch tensor used, with matching
shapes; otherwise a ValueError lists what is missing, unexpected or mis-shaped.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gnj import pretrained

LEAVES = {"gamma": ("params", "scale"), "beta": ("params", "bias"), "bias": ("params", "bias"),
          "running_mean": ("batch_stats", "mean"), "moving_mean": ("batch_stats", "mean"),
          "running_var": ("batch_stats", "var"), "moving_var": ("batch_stats", "var"),
          "eps": ("params", "eps"), "tau": ("params", "tau"),
          # Online Normalization's streams (OnlineNorm2d.norm.{m, var, u, v})
          "m": ("batch_stats", "mean"), "var": ("batch_stats", "var"),
          "u": ("backward_state", "u"), "v": ("backward_state", "v")}
IGNORED = re.compile(r".*\.num_batches_tracked$")


@dataclasses.dataclass
class NameMap:
    """How one reference module's state dict lands in a gnj model.

    ``modules``: torch module prefix → gnj module path (``a/b``); a tensor ``prefix.leaf`` goes to
    that module's leaf by :data:`LEAVES` (``weight`` → ``kernel``, else ``scale``).
    ``tensors``: full torch key → ``collection/path/leaf`` for tensors with their own name.
    ``unused``: regexes of tensors the reference creates but never uses in its forward.
    ``transforms``: full torch key → function (array, target shape) → array, for layouts that a
    transpose cannot express.
    """

    modules: dict[str, str] = dataclasses.field(default_factory=dict)
    tensors: dict[str, str] = dataclasses.field(default_factory=dict)
    unused: list[str] = dataclasses.field(default_factory=list)
    transforms: dict[str, Callable[[np.ndarray, tuple[int, ...]], np.ndarray]] = (
        dataclasses.field(default_factory=dict))

    def norm(self, torch_prefix: str, gnj_path: str) -> None:
        self.modules[torch_prefix] = gnj_path

    def is_unused(self, key: str) -> bool:
        return bool(IGNORED.fullmatch(key)) or any(re.fullmatch(p, key) for p in self.unused)


def _leaf(tree: Mapping[str, Any], path: list[str]) -> Any:
    for p in path:
        if not isinstance(tree, Mapping) or p not in tree:
            return None
        tree = tree[p]
    return tree


def _target(key: str, name_map: NameMap, variables: Mapping[str, Any]
            ) -> tuple[str, list[str]] | None:
    if key in name_map.tensors:
        collection, *path = name_map.tensors[key].split("/")
        return collection, path
    prefix, _, leaf = key.rpartition(".")
    if prefix not in name_map.modules:
        return None
    module = name_map.modules[prefix].split("/")
    if leaf == "weight":
        has_kernel = _leaf(variables.get("params", {}), [*module, "kernel"]) is not None
        return "params", [*module, "kernel" if has_kernel else "scale"]
    if leaf not in LEAVES:
        return None
    collection, name = LEAVES[leaf]
    return collection, [*module, name]


def _layout(value: np.ndarray, shape: tuple[int, ...], leaf: str) -> np.ndarray:
    if value.ndim == 4 and len(shape) == 4:
        return np.transpose(value, (2, 3, 1, 0))  # OIHW → HWIO
    if value.ndim == 2 and len(shape) == 2 and leaf == "kernel":
        return value.T  # (out, in) → (in, out)
    if value.size == int(np.prod(shape)):
        return np.reshape(value, shape)  # (1, C, 1, 1) → (C,), (1,) → ()
    return value


def _plain(tree: Any) -> Any:
    return {k: _plain(v) for k, v in tree.items()} if isinstance(tree, Mapping) else tree


def convert(variables: Mapping[str, Any], state_dict: Mapping[str, Any], name_map: NameMap,
            label: str) -> dict[str, Any]:
    """``variables`` with every tensor taken from ``state_dict`` through ``name_map``."""
    out = {col: _plain(v) for col, v in variables.items()}
    covered: set[tuple[str, ...]] = set()
    unexpected, bad_shape = [], []
    for key, value in state_dict.items():
        if name_map.is_unused(key):
            continue
        target = _target(key, name_map, out)
        current = None if target is None else _leaf(out.get(target[0], {}), target[1])
        if current is None:
            where = "" if target is None else f" (→ {target[0]}/{'/'.join(target[1])})"
            unexpected.append(key + where)
            continue
        collection, path = target
        shape = tuple(np.shape(current))
        value = np.asarray(value)
        new = (name_map.transforms[key](value, shape) if key in name_map.transforms
               else _layout(value, shape, path[-1]))
        if tuple(new.shape) != shape:
            bad_shape.append(f"{key} {tuple(value.shape)} vs {collection}/{'/'.join(path)} "
                             f"{shape}")
            continue
        node = out[collection]
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = np.asarray(new, dtype=np.asarray(current).dtype)
        covered.add((collection, *path))
    pretrained.check_fit(f"convert ({label})", out, covered, unexpected, bad_shape)
    return out


# ------------------------------------------------------------------------------ name maps


def _constnet(model: Any) -> NameMap:
    """BeyondSigProp ``model.py::WideResNet``: conv1, block{s}.layer.{i}.{bn, conv, conv_res,
    scale, biases.0, biases.1}, fc. The BN path never uses ``scale`` / ``biases``, the Fixup path
    never uses ``bn``; ``biases.1`` and ``scale`` are Fixup's b₁ and s."""
    from gnj.proj.constnet.models import blocks_per_stage

    m = NameMap(modules={"conv1": "stem", "fc": "fc"})
    fixup = model.norm in ("none", "identity", "plain")
    for s in range(1, 4):
        for i in range(blocks_per_stage(model.depth, "wrn_constnet")):
            t, g = f"block{s}.layer.{i}", f"stage{s}_block{i}"
            m.modules.update({f"{t}.conv": f"{g}/conv", f"{t}.conv_res": f"{g}/conv_res"})
            if fixup:
                m.tensors.update({f"{t}.biases.0": f"params/{g}/bias0",
                                  f"{t}.biases.1": f"params/{g}/bias1",
                                  f"{t}.scale": f"params/{g}/scale"})
            else:
                m.norm(f"{t}.bn", f"{g}/norm")
    m.unused = [r"block\d\.layer\.\d+\.bn\..*"] if fixup else [
        r"block\d\.layer\.\d+\.(scale|biases\.\d)"]
    return m


def _leakynet(model: Any) -> NameMap:
    """BeyondSigProp ``remodel.py::LRNet``: conv1, block{s}.layer.{i}.{bn, conv, biases.0},
    fc; block index i counts globally (phase −1 on odd blocks, the only ones whose ``bn`` runs).
    Unused: ``biases.1`` of every block, ``bn`` of even blocks (and of all without a norm)."""
    from gnj.proj.constnet.models import blocks_per_stage

    n = blocks_per_stage(model.depth, "leakynet")
    m = NameMap(modules={"conv1": "stem", "fc": "fc"}, unused=[r"block\d\.layer\.\d+\.biases\.1"])
    with_norm = model.norm not in ("none", "identity", "plain")
    for s in range(1, 4):
        for i in range(n):
            t, g, idx = f"block{s}.layer.{i}", f"block{(s - 1) * n + i}", (s - 1) * n + i
            m.modules[f"{t}.conv"] = f"{g}/conv"
            m.tensors[f"{t}.biases.0"] = f"params/{g}/bias0"
            if idx % 2 and with_norm:
                m.norm(f"{t}.bn", f"{g}/norm")
            else:
                m.unused.append(re.escape(f"{t}.bn.") + ".*")
    return m


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


def _dense_mlp(model: Any) -> NameMap:
    """NN_Mass ``Dense_MLP``: features.{j} → layer{j}; its ``batchnorm`` list is never used."""
    return NameMap(modules={f"features.{j}": f"layer{j}" for j in range(model.depth)},
                   unused=[r"batchnorm\..*"])


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


def _gne_resnet(model: Any) -> NameMap:
    """GNEDNN ``cifar/models/resnet.py::ResNet`` and ``serial_net.py::serialNet``: conv1, norm1,
    layer{s}.{i}.{conv1, conv2, norm1, norm2}, linear (``block0`` / ``block`` repeat the same
    modules under a second name). Unused outside ``bns`` mode: the ResNet's ``bias2``."""
    m = NameMap(modules={"conv1": "stem", "linear": "head"},
                unused=[r"block0\..*", r"layer\d\.\d+\.block\..*"])
    m.norm("norm1", "stem_norm")
    if not getattr(model, "bns", False):
        m.unused.append("bias2")
    for s in range(1, 4):
        for i in range((model.depth - 2) // 6):
            t, g = f"layer{s}.{i}", f"stage{s}_block{i}"
            for name in ("conv1", "conv2", "norm1", "norm2"):
                m.modules[f"{t}.{name}"] = f"{g}/{name}"
    return m


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


def _online_norm_resnet(model: Any) -> NameMap:
    """Online Normalization ``experiments/resnet`` ResNet with ``cifar=True`` (torchvision's
    names): conv1, bn1, layer{s}.{i}.{conv1, bn1, conv2, bn2, downsample.0 (1×1 conv),
    downsample.1 (norm)}, fc; an OnlineNorm2d keeps its streams in ``.norm``."""
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


def _resnet_cifar(model: Any) -> NameMap:
    """GNEDNN's layout for option-A shortcuts (its only kind); Online Normalization's
    torchvision-style layout for option B (1×1 conv + norm), the shortcut that code uses."""
    return _online_norm_resnet(model) if model.shortcut == "B" else _gne_resnet(model)


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


FAMILIES: dict[str, Callable[[Any], NameMap]] = {
    "ConstNet": _constnet, "LeakyNet": _leakynet, "DenseCNN": _dense_cnn,
    "DenseCNNDepthwise": _dense_cnn, "DenseMLP": _dense_mlp, "VGG": _vgg,
    "ResNet56Lubana": _lubana_resnet, "ResNetCifar": _resnet_cifar, "SerialNet": _gne_resnet,
    "DenseNetCifar": _gne_densenet, "FixupResNet": _gne_fixup_resnet,
    "MobileNetV1": _gne_mobilenet, "MLP": _online_norm_mlp,
}


def name_map(model: Any) -> NameMap:
    """The family's name map for a gnj model instance (ValueError for families without one)."""
    family = type(model).__name__
    if family not in FAMILIES:
        raise ValueError(f"convert: no reference name map for {family}; supported: "
                         f"{', '.join(sorted(FAMILIES))}, and the torchvision ResNets / "
                         "MobileNetV2 (gnj.pretrained)")
    return FAMILIES[family](model)


def from_torch(model: Any, variables: Mapping[str, Any], state_dict: Mapping[str, Any]
               ) -> dict[str, Any]:
    """``variables`` of ``model`` filled from a reference-layout state dict (numpy arrays)."""
    state_dict = {k: np.asarray(v) for k, v in state_dict.items() if not IGNORED.fullmatch(k)}
    from gnj.models import mobilenet_v2, resnet

    if isinstance(model, resnet.ResNet):
        return pretrained.convert(variables, state_dict, "resnet")
    if isinstance(model, mobilenet_v2.MobileNetV2):
        return pretrained.convert(variables, state_dict, "mobilenet_v2")
    return convert(variables, state_dict, name_map(model), type(model).__name__)
