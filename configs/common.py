"""Helpers every experiment family shares: the ``runlocal`` shrink, the evaluation cadence, the
model section, and the torchvision ImageNet pipeline.

An experiment config's argument is ``<variant>[,<option>...]`` parsed by
:class:`gnj.config_args.Family`. ``runlocal`` (an option of every variant of every family)
shrinks a run to a few seconds on a CPU: scikit-learn's 8×8 digits (built offline), the model's
own ``tiny`` sizes, batch 32, 4 steps; everything else (norm, init, activation, optimizer recipe,
mixup, warm-up) stays as in the variant.
"""

from __future__ import annotations

import ml_collections

from gnj.config_args import Option
from gnj.config_schema import base_config

RUNLOCAL = Option("runlocal")
IMAGENET_TRAIN = 1_281_167


def new_config() -> ml_collections.ConfigDict:
    """A fresh config holding every default (``gnj/config_schema.py`` ``FIELDS``)."""
    return base_config()


def set_eval_cadence(c: ml_collections.ConfigDict, steps_per_epoch: int) -> None:
    """Log every 100 steps, evaluate and checkpoint once per epoch."""
    c.log_every_steps = min(100, steps_per_epoch)
    c.eval_every_steps = steps_per_epoch
    c.checkpoint_every_steps = steps_per_epoch


def imagenet_data(c: ml_collections.ConfigDict) -> None:
    """The torchvision ImageNet pipeline: RandomResizedCrop 224 + flip, val resize 256 and centre
    crop 224, ImageNet mean/std (streamed by ``gnj.data.imagenet``)."""
    from gnj.data.imagenet import IMAGENET_MEAN, IMAGENET_STD

    c.dataset.name = "imagenet2012"
    c.dataset.mean, c.dataset.std = IMAGENET_MEAN, IMAGENET_STD
    c.dataset.image_size = 224
    c.dataset.eval_resize = 256
    c.dataset.augment.update(dict(crop_padding=0, flip=True))
    c.eval_batch_size = 400


def runlocal(c: ml_collections.ConfigDict, model_sizes: dict | None = None) -> None:
    """Shrink ``c`` in place to seconds on a CPU (digits, tiny model, 4 steps).

    Models whose ``tiny`` input is 32×32 or larger (MobileNet v1, the CIFAR DenseNet) get
    ``digits_32x32``, the digits upsampled ×4 (registered by ``gnj.data.imagenet``).
    """
    tiny = _tiny(c.model.name)
    big_input = min(tuple(tiny.get("input_shape", (8, 8)))[:2]) >= 32
    if big_input:
        import gnj.data.imagenet  # noqa: F401  (registers digits_32x32)
    c.dataset.name = "digits_32x32" if big_input else "digits"
    c.dataset.mean, c.dataset.std = (), ()
    c.dataset.augment.crop_padding = min(c.dataset.augment.crop_padding, 1)
    sizes = dict(model_sizes or {})
    if not sizes:
        sizes = {k: v for k, v in tiny.items() if k != "input_shape"}
    with c.model.ignore_type():  # e.g. vgg's cfg name → an explicit tiny tuple
        for k, v in sizes.items():
            c.model[k] = v
    c.batch_size, c.eval_batch_size = 32, 200
    c.num_steps = 4
    c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 2, 4, 4
    c.pretrained = ""


def _tiny(model_name: str) -> dict:
    """The model's own ``tiny`` sizes (a class attribute of every gnj model), if registered."""
    from gnj.registry import MODELS

    if model_name not in MODELS:
        return {}
    return dict(getattr(MODELS.get(model_name), "tiny", {}) or {})


def apply_model(c: ml_collections.ConfigDict, name: str, **fields) -> None:
    """Replace the ``model`` section by ``{name, **fields}`` (base_config's keys are dropped,
    but for the precision keys ``dtype`` / ``param_dtype``)."""
    kept = {k: c.model[k] for k in ("dtype", "param_dtype") if k in c.model}
    c.model = ml_collections.ConfigDict(dict(name=name, **{**kept, **fields}))


def scaled_milestones(milestones: tuple, epochs: float, reference_epochs: float,
                      at_least: int = 1) -> tuple[int, ...]:
    """Milestones (epochs) moved to the same fractions of a run of ``epochs`` epochs."""
    return tuple(max(at_least, round(m * epochs / reference_epochs)) for m in milestones)
