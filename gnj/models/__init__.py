"""Model zoo. Importing this package registers every model in ``gnj.registry.MODELS``.

``build(model_config, num_classes)`` turns a config's ``model`` section into a Flax module.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

import gnj.nn  # noqa: F401  (registers layers)
from gnj import precision
from gnj.models import densenet, mlp, mobilenet, mobilenet_v2, resnet, resnet_cifar, vgg  # noqa: F401
from gnj.registry import MODELS


def build(model_config: Any, num_classes: int | None = None) -> nn.Module:
    """Model from a config section ``{name: "resnet_cifar", depth: 20, ...}``.

    Every key but ``name`` and the precision keys (``dtype``, ``param_dtype``: applied by the
    train step, ``gnj/precision.py``) is passed to the model's constructor; ``num_classes``
    (from the dataset) fills in the model's ``num_classes`` unless the config sets it.
    """
    cfg = {k: v for k, v in dict(model_config).items() if k not in precision.KEYS}
    name = cfg.pop("name")
    factory = MODELS.get(name)
    if num_classes is not None and "num_classes" not in cfg:
        cfg["num_classes"] = num_classes
    fields = getattr(factory, "__dataclass_fields__", None)
    if fields is not None:
        unknown = sorted(set(cfg) - set(fields) - {"parent", "name"})
        if unknown:
            valid = sorted(k for k in fields if k not in ("parent", "name"))
            raise ValueError(f"model {name!r} has no option(s) {unknown}; valid: {valid}")
    return factory(**cfg)
