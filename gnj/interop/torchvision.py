"""torchvision weights (``.pth`` state dicts) into gnj's torchvision-shaped models.

    python -m gnj.main --config=<an ImageNet config>:<a MobileNetV2 variant> \
        --config.pretrained=mobilenet_v2-b0353104.pth --workdir=runs/mbv2 --mode=eval

Supported: every model class of the ResNet family of ``gnj.models.resnet`` (resnet18 … 152,
ResNeXt, Wide ResNet; BatchNorm, plain convs) and of ``gnj.models.mobilenet_v2``, subclasses
included (:func:`kind_of_model`). The name maps are written from the two
layouts (torchvision ``resnet.py`` / ``mobilenetv2.py`` and gnj's modules), not guessed:

===========================================  =========================================
torchvision                                  gnj
===========================================  =========================================
``conv1.weight`` (O, I, kh, kw)              ``params/conv1/kernel`` (kh, kw, I, O)
``bn1.weight / bias``                        ``params/bn1/scale / bias``
``bn1.running_mean / running_var``           ``batch_stats/bn1/mean / var``
``layer2.0.conv3.weight``                    ``params/layer2_0/conv3/kernel``
``layer2.0.downsample.0 / .1``               ``layer2_0/downsample_conv / downsample_bn``
``fc.weight`` (out, in) / ``fc.bias``        ``params/fc/kernel`` (in, out) / ``bias``
``features.0.0 / .1`` (MobileNetV2 stem)     ``stem/conv / stem/norm``
``features.k.conv.{0,1,2,3}`` (t ≠ 1)        ``block{k-1}/expand, depthwise, project, project_norm``
``features.k.conv.{0,1,2}`` (t = 1)          ``block{k-1}/depthwise, project, project_norm``
``features.{n+1}.0 / .1``                    ``last/conv / last/norm``
``classifier.1.weight / bias``               ``classifier/kernel / bias``
===========================================  =========================================

Grouped / depthwise kernels (O, I/g, kh, kw) become (kh, kw, I/g, O) the same way.
``num_batches_tracked`` is dropped. A ``module.`` prefix (DataParallel) and a ``state_dict`` /
``model`` wrapper (training checkpoints) are unwrapped. Every gnj parameter and running statistic
must be covered and every torch tensor used, with matching shapes; otherwise a ValueError lists
what is missing, unexpected or mis-shaped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

BN_FIELDS = {"weight": ("params", "scale"), "bias": ("params", "bias"),
             "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """A ``.pth`` file's tensors as float32 numpy arrays (needs PyTorch to unpickle)."""
    try:
        import torch
    except ImportError as e:
        raise ImportError("reading a .pth file needs PyTorch: pip install torch "
                          "(CPU wheels are enough)") from e
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return to_numpy(obj)


def to_numpy(obj: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Unwrap a checkpoint dict and convert tensors to numpy (``module.`` prefixes stripped)."""
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    out = {}
    for k, v in obj.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if k.endswith("num_batches_tracked"):
            continue
        arr = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
        out[k] = arr
    return out


# ----------------------------------------------------------------------------- name maps


def _conv(target: tuple[str, ...]) -> tuple[str, tuple[str, ...], str]:
    return "params", (*target, "kernel"), "conv"


def _bn(field: str, target: tuple[str, ...]) -> tuple[str, tuple[str, ...], str]:
    collection, leaf = BN_FIELDS[field]
    return collection, (*target, leaf), "copy"


def resnet_target(key: str) -> tuple[str, tuple[str, ...], str] | None:
    """(collection, gnj path, transform) of a torchvision ResNet tensor name, or None."""
    parts = key.split(".")
    if key == "conv1.weight":
        return _conv(("conv1",))
    if parts[0] == "bn1" and len(parts) == 2 and parts[1] in BN_FIELDS:
        return _bn(parts[1], ("bn1",))
    if parts[0] == "fc" and len(parts) == 2:
        return ("params", ("fc", "kernel"), "linear") if parts[1] == "weight" else \
            ("params", ("fc", "bias"), "copy")
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", key)
    if not m:
        return None
    block, rest = f"layer{m.group(1)}_{m.group(2)}", m.group(3)
    if mm := re.fullmatch(r"(conv\d)\.weight", rest):
        return _conv((block, mm.group(1)))
    if mm := re.fullmatch(r"(bn\d)\.(\w+)", rest):
        return _bn(mm.group(2), (block, mm.group(1))) if mm.group(2) in BN_FIELDS else None
    if rest == "downsample.0.weight":
        return _conv((block, "downsample_conv"))
    if mm := re.fullmatch(r"downsample\.1\.(\w+)", rest):
        return _bn(mm.group(1), (block, "downsample_bn")) if mm.group(1) in BN_FIELDS else None
    return None


def mobilenet_v2_target(key: str, params: Mapping[str, Any]
                        ) -> tuple[str, tuple[str, ...], str] | None:
    """(collection, gnj path, transform) of a torchvision MobileNetV2 tensor name, or None.

    ``params`` (the gnj model's) tells which blocks have an expansion conv and how many blocks
    there are.
    """
    blocks = sorted((k for k in params if re.fullmatch(r"block\d+", k)), key=lambda b: int(b[5:]))
    parts = key.split(".")
    if parts[0] == "classifier" and len(parts) == 3 and parts[1] == "1":
        return ("params", ("classifier", "kernel"), "linear") if parts[2] == "weight" else \
            ("params", ("classifier", "bias"), "copy")
    if parts[0] != "features" or len(parts) < 4:
        return None
    k = int(parts[1])

    def conv_bn(target: str, sub: str, field: str):
        if sub == "0" and field == "weight":
            return _conv((target, "conv"))
        if sub == "1" and field in BN_FIELDS:
            return _bn(field, (target, "norm"))
        return None

    if k == 0:
        return conv_bn("stem", parts[2], parts[3])
    if k == len(blocks) + 1:
        return conv_bn("last", parts[2], parts[3])
    if not 1 <= k <= len(blocks) or parts[2] != "conv":
        return None
    block = blocks[k - 1]
    order = (["expand"] if "expand" in params[block] else []) + ["depthwise", "project",
                                                                  "project_norm"]
    idx = int(parts[3])
    if idx >= len(order):
        return None
    name = order[idx]
    if name in ("expand", "depthwise"):
        if len(parts) != 6:
            return None
        inner = conv_bn(name, parts[4], parts[5])
        return None if inner is None else (inner[0], (block, *inner[1]), inner[2])
    if len(parts) != 5:
        return None
    if name == "project":
        return _conv((block, "project")) if parts[4] == "weight" else None
    return _bn(parts[4], (block, "project_norm")) if parts[4] in BN_FIELDS else None


# ----------------------------------------------------------------------------- conversion


def _convert(value: np.ndarray, transform: str) -> np.ndarray:
    if transform == "conv":  # OIHW → HWIO
        return np.transpose(value, (2, 3, 1, 0))
    if transform == "linear":  # (out, in) → (in, out)
        return value.T
    return value


def get_leaf(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The leaf of a nested mapping at ``path``, or None where the path does not exist."""
    for p in path:
        if not isinstance(tree, Mapping) or p not in tree:
            return None
        tree = tree[p]
    return tree


def set_leaf(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Put ``value`` at ``path`` of a nested dict (the path must exist but for its leaf)."""
    for p in path[:-1]:
        tree = tree[p]
    tree[path[-1]] = value


def _leaf_paths(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out += _leaf_paths(v, (*prefix, k))
        else:
            out.append((*prefix, k))
    return out


def plain_tree(tree: Any) -> Any:
    """A nested mapping (e.g. a FrozenDict) as nested plain dicts, leaves shared."""
    if isinstance(tree, Mapping):
        return {k: plain_tree(v) for k, v in tree.items()}
    return tree


def kind_of_model(model: Any) -> str | None:
    """``"resnet"`` or ``"mobilenet_v2"`` for a model (instance or class) of those families,
    else None."""
    from gnj.models import mobilenet_v2, resnet

    cls = model if isinstance(model, type) else type(model)
    if issubclass(cls, resnet.ResNet):
        return "resnet"
    if issubclass(cls, mobilenet_v2.MobileNetV2):
        return "mobilenet_v2"
    return None


def kind_of(model_name: str) -> str:
    """The torchvision layout of the registered model ``model_name`` (ValueError if none)."""
    from gnj.registry import MODELS

    kind = kind_of_model(MODELS.get(model_name))
    if kind is None:
        supported = [n for n in MODELS.names() if kind_of_model(MODELS.get(n)) is not None]
        raise ValueError(f"pretrained: no torchvision name map for model {model_name!r}; "
                         f"supported: {', '.join(supported)}")
    return kind


def convert(variables: Mapping[str, Any], state_dict: Mapping[str, np.ndarray], kind: str
            ) -> dict[str, Any]:
    """``variables`` (params + batch_stats of the gnj model) with every tensor replaced."""
    out = {col: plain_tree(v) for col, v in variables.items()}
    params = out.get("params", {})
    covered: set[tuple[str, ...]] = set()
    unexpected, bad_shape = [], []
    for key, value in state_dict.items():
        target = (resnet_target(key) if kind == "resnet"
                  else mobilenet_v2_target(key, params))
        if target is None:
            unexpected.append(key)
            continue
        collection, path, transform = target
        current = get_leaf(out.get(collection, {}), path)
        if current is None:
            unexpected.append(f"{key} (→ {collection}/{'/'.join(path)}, not in the gnj model)")
            continue
        new = _convert(np.asarray(value), transform)
        if tuple(new.shape) != tuple(np.shape(current)):
            bad_shape.append(f"{key} {tuple(new.shape)} vs {collection}/{'/'.join(path)} "
                             f"{tuple(np.shape(current))}")
            continue
        set_leaf(out[collection], path, np.asarray(new, dtype=np.asarray(current).dtype))
        covered.add((collection, *path))
    check_fit(f"pretrained ({kind})", out, covered, unexpected, bad_shape)
    return out


def check_fit(label: str, variables: Mapping[str, Any], covered: set[tuple[str, ...]],
              unexpected: list[str], bad_shape: list[str]) -> None:
    """Raise one ValueError listing every params / batch_stats leaf no tensor filled, every
    tensor that found no place, and every shape mismatch of a conversion."""
    missing = [f"{col}/{'/'.join(p)}" for col in ("params", "batch_stats") if col in variables
               for p in _leaf_paths(variables[col]) if (col, *p) not in covered]
    if unexpected or bad_shape or missing:
        raise ValueError(
            f"{label}: the state dict does not fit the gnj model:\n"
            f"  missing in the state dict: {missing[:20]}{' ...' if len(missing) > 20 else ''}\n"
            f"  unexpected tensors: {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}\n"
            f"  shape mismatches: {bad_shape[:20]}")


def load_into_variables(variables: Mapping[str, Any], source: str | Mapping[str, Any],
                        model_name: str) -> dict[str, Any]:
    """Load a ``.pth`` path (or an in-memory state dict) into a gnj model's variables."""
    state_dict = load_state_dict(source) if isinstance(source, str) else to_numpy(source)
    return convert(variables, state_dict, kind_of(model_name))


def apply_to_state(state: Any, config: Any) -> Any:
    """``state`` (a TrainState) with params and batch_stats from ``config.pretrained``.

    The arrays keep the dtypes and shardings of the freshly initialised state; the optimizer
    state and the step are untouched (a new run from pretrained weights).
    """
    path = config.get("pretrained", "")
    if not path:
        return state
    variables = {"params": state.params, **{k: v for k, v in state.model_state.items()
                                            if k == "batch_stats"}}
    host = jax.device_get(variables)
    new = load_into_variables(host, path, config.model.name)
    put = lambda n, o: jax.device_put(np.asarray(n, o.dtype), o.sharding)
    params = jax.tree.map(put, new["params"], plain_tree(state.params))
    model_state = dict(state.model_state)
    if "batch_stats" in new:
        model_state["batch_stats"] = jax.tree.map(put, new["batch_stats"],
                                                  plain_tree(state.model_state["batch_stats"]))
    print(f"initialised from torchvision weights {path}", flush=True)
    return state.replace(params=params, model_state=model_state)
