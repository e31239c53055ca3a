"""Default experiment: a BatchNorm CIFAR ResNet-8 on scikit-learn's 8×8 digits (offline).

    python -m gnj.main --config=configs/default.py --workdir=runs/default
    python -m gnj.main --config=configs/default.py:cifar10 --workdir=runs/cifar10_resnet20

Variants (``:arg``): ``digits`` (the default, also ``""``: < 3 min on 2 CPU cores), ``cifar10``
(ResNet-20 on TFDS cifar10: SGD 0.9, wd 5e-4, crop+flip, 130 epochs); option ``runlocal`` (a
few seconds on digits, for smoke tests): ``configs/default.py:runlocal``,
``configs/default.py:cifar10,runlocal``.
"""

from __future__ import annotations

import ml_collections

from gnj import config_schema
from gnj.config_args import Family, Option


def base_config() -> ml_collections.ConfigDict:
    """Every key a run reads, with defaults; experiment configs start from this.

    The defaults, their valid domains and what each key means are declared once, in
    ``gnj/config_schema.py`` (``FIELDS``); a run's resolved config is validated against it.
    """
    return config_schema.base_config()


FAMILY = Family("configs/default.py", variants=["digits", "cifar10"], default="digits",
                 options=[Option("runlocal")])  # a few seconds on digits
VARIANTS = list(FAMILY.variants)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = FAMILY.parse(arg)
    c = base_config()
    if args.variant == "cifar10":
        c.dataset.name = "cifar10"
        c.dataset.augment.crop_padding = 4
        c.dataset.augment.flip = True
        c.model.depth = 20
        c.optim.schedule = "multistep(milestones=(80,), multiplier=0.1)"
        c.optim.wd_mask = "conv|head|stem"
        c.optim.clip_value = 2.0
        c.eval_batch_size = 500
        c.num_epochs = 130.0
        c.log_every_steps = 100
        c.eval_every_steps = 390
        c.checkpoint_every_steps = 390
    if args.runlocal:
        c.dataset.name = "digits"
        c.dataset.augment.crop_padding = min(c.dataset.augment.crop_padding, 1)
        c.eval_batch_size = 200
        c.num_steps = 6
        c.log_every_steps = 2
        c.eval_every_steps = 6
        c.checkpoint_every_steps = 3
        c.batch_size = 32
    return c
