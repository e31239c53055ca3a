"""Online Normalization ResNet experiments (Chiley et al.; docs/proj/online_norm.md).

    python -m gnj.main --config=configs/online_norm/resnet.py:cifar10,online --workdir=runs/on_c10
    python -m gnj.main --config=configs/online_norm/resnet.py:digits,online --workdir=runs/on_digits
    python -m launch.sweep configs/online_norm/resnet.py --segment readme --repeats 5 \
        --root runs/on_cifar      # the README's 10 commands, 5 runs each (median reported)

Argument ``<dataset>,<norm-mode>[,runlocal]``: dataset ``cifar10`` | ``cifar100`` | ``digits``
(offline), norm-mode ``batch`` | ``group`` | ``layer`` | ``instance`` | ``online`` | ``none``.
CIFAR recipe of the reference: ResNet-20 with option-B shortcuts, kaiming fan_out convs, SGD 0.1
momentum 0.9, wd 2e-4 on every parameter, 250 epochs with ×0.1 at 100/150/200, batch 128, pad-4
crop + flip; online decays from the dataset preset (CIFAR-10 1023/1024 & 127/128, CIFAR-100
511/512 & 15/16), ECM layer scaling; GN with 8 groups; LayerNorm with the per-element affine.
``batch_size`` changes apply the reference's rule m′ = m^(B/128), lr′ = lr·(B/128)(1−m′)/(1−m)
(pass ``,b<B>`` in the argument, e.g. ``cifar10,online,b32``, which also sets the batch size).

Published (docs/proj/online_norm.md, best epoch of the median curve over 5 runs, ResNet-20, 250
epochs; what ``gnj.report`` prints as "median-curve best %"), from
``launch.sweep configs/online_norm/resnet.py --segment cifar10|cifar100 --repeats 5``:

=========== ================= ================= ====== ====== ======
dataset     online            batch             layer  inst.  group
=========== ================= ================= ====== ====== ======
CIFAR-10    92.3 (91.8–92.3)  92.2 (91.9–92.5)  87.4   90.4   90.3
CIFAR-100   68.6 (67.6–69.4)  68.6 (68.1–69.2)  59.2   63.1   63.3
=========== ================= ================= ====== ====== ======

(best-epoch validation loss, online / batch: CIFAR-10 0.26 / 0.26, CIFAR-100 1.12 / 1.14).

Options after the norm-mode: ``runlocal``, ``b<B>``, ``e<N>`` (N epochs; the milestones keep
their fractions of the run, 100/150/200 of 250 on CIFAR, 20/30 of 40 on digits), ``d<depth>``
(ResNet depth 6n+2). The CPU reproduction in the README (segment ``digits``: online, batch and
no norm on the offline digits, with ``d8,e20``: ResNet-8, 20 epochs, milestones 10 and 15) is

    python -m launch.sweep configs/online_norm/resnet.py --segment digits --options d8,e20 \
        --repeats 3 --root runs/repro/online_norm && python -m gnj.report runs/repro/online_norm
"""

from __future__ import annotations

import ml_collections

from configs import common
from gnj.config_args import Family, Option
from gnj.proj.online_norm.schedules import scale_lr_and_momentum

NORM_MODES = {
    "batch": "batch",
    "group": "group(groups=8)",
    "layer": "layer(affine='element')",
    "instance": "instance",
    "none": "none",
}
DATASETS = ("cifar10", "cifar100", "digits")
VARIANTS = [f"{d},{n}" for d in DATASETS for n in (*NORM_MODES, "online")]
#: The README's commands (each run 5 times, the median reported): ``launch.sweep --segment``.
README_MODES = ("online", "batch", "layer", "instance", "group")
SEGMENTS = {
    "cifar10": [f"cifar10,{m}" for m in README_MODES],
    "cifar100": [f"cifar100,{m}" for m in README_MODES],
    "readme": [f"{d},{m}" for d in ("cifar10", "cifar100") for m in README_MODES],
    # the offline CPU comparison of the README: Online Normalization vs BatchNorm vs no norm
    "digits": ["digits,online", "digits,batch", "digits,none"],
}
FAMILY = Family(
    "configs/online_norm/resnet.py", variants=VARIANTS, default="cifar10,online",
    options=[common.RUNLOCAL, Option("batch", int, token="b"), Option("epochs", int, token="e"),
             Option("depth", int, token="d")])


def norm_spec(mode: str, dataset: str) -> str:
    if mode == "online":
        preset = dataset if dataset in ("cifar10", "cifar100") else "cifar10"
        return f"online(preset='{preset}', ecm='ls')"
    return NORM_MODES[mode]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = FAMILY.parse(arg)
    dataset, mode = args.parts
    c = common.new_config()
    c.dataset.name = dataset
    c.model.update(dict(name="resnet_cifar", depth=20, shortcut="B", norm=norm_spec(mode, dataset),
                        act="relu"))
    c.model.weight_init = "kaiming_normal(mode='fan_out', gain=1.4142135623730951)"
    c.optim.update(dict(lr=0.1, momentum=0.9, weight_decay=2e-4, wd_mask=".*"))
    c.batch_size = 128
    c.num_epochs = 250.0
    milestones = (100, 150, 200)
    if dataset == "digits":  # the offline stand-in: same model and recipe, 8×8 images
        c.num_epochs = 40.0
        milestones = (20, 30)
    else:
        c.dataset.augment.update(dict(crop_padding=4, flip=True))
        c.eval_batch_size = 500
        c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 100, 390, 390
    if args.batch is not None:
        c.batch_size = args.batch
        c.optim.lr, c.optim.momentum = scale_lr_and_momentum(0.1, 0.9, args.batch, 128)
    if args.epochs is not None:
        milestones = common.scaled_milestones(milestones, args.epochs, c.num_epochs, 0)
        c.num_epochs = float(args.epochs)
    if args.depth is not None:
        c.model.depth = args.depth
    if args.runlocal:  # this family's own shrink: ResNet-8 of width 8, 6 steps on digits
        c.dataset.name = "digits"
        c.dataset.augment.update(dict(crop_padding=0, flip=False))
        c.model.depth, c.model.width = 8, 8
        c.batch_size, c.eval_batch_size, c.num_steps = 32, 200, 6
        c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 2, 6, 6
    c.optim.schedule = f"multistep(milestones={milestones!r}, multiplier=0.1)"
    return c
