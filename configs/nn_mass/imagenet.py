"""NN-Mass on ImageNet (Bhardwaj et al.; docs/proj/nn_mass.md): ``train_imagenet.py``.

    python -m gnj.main --config=configs/nn_mass/imagenet.py:mobilenet_v2 --workdir=runs/mbv2
        # = imagenet.py -a mobilenetv2 --epochs 150 --lr-decay cos --lr 0.05 --wd 4e-5
    python -m gnj.main --config=configs/nn_mass/imagenet.py:mobilenet_v2_w1.0 \
        --config.pretrained=mobilenet_v2.pth --workdir=runs/mbv2_eval --mode=eval
        # = imagenet.py -a mobilenetv2 --weight <pretrained-pth-file> -e

Variants: ``mobilenet_v2`` (what the script really builds whatever ``-a`` / ``--width-mult``
say: width 1.1 with the deeper setting [[1,16,2,1],[6,24,3,2],[6,32,4,2],[6,64,5,2],[6,96,4,1],
[6,160,3,2],[6,320,1,1]], NN-Mass 1797 [as-written]), ``mobilenet_v2_w<m>`` (torchvision's
MobileNetV2 at width ``m``, what the README's ``--width-mult`` asks for), and the torchvision
ResNets the README lists (``resnet18`` … ``wide_resnet101_2``). Options: ``i<size>``
(``--input-size``; eval resizes to size/0.875), ``e<epochs>``, ``warmup`` (5 epochs linear),
``b<batch>``, ``runlocal``.

Recipe (the README's): SGD momentum 0.9, lr 0.05 with cosine decay over 150 epochs, weight
decay 4e-5 on every parameter, batch 256; RandomResizedCrop + flip, val resize + centre crop,
ImageNet mean/std.
"""

from __future__ import annotations

import ml_collections

from configs import common
from gnj.config_args import Family, Option

DEEP_SETTING = ((1, 16, 2, 1), (6, 24, 3, 2), (6, 32, 4, 2), (6, 64, 5, 2), (6, 96, 4, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
           "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2")
VARIANTS = ["mobilenet_v2", "mobilenet_v2_w1.0", *RESNETS]
SEGMENTS = {"mobilenet": ["mobilenet_v2"], "resnets": list(RESNETS)}
FAMILY = Family(
    "configs/nn_mass/imagenet.py", variants=VARIANTS, default="mobilenet_v2",
    patterns={"mobilenet_v2_w": float},
    options=[Option("input_size", int, token="i", metavar="input size"),
             Option("epochs", int, token="e"), Option("batch", int, token="b"),
             Option("warmup"), common.RUNLOCAL])


def _model(variant: str, width_mult: float | None) -> dict:
    if variant == "mobilenet_v2":
        return dict(name="mobilenet_v2_nn_mass_deep", width_mult=1.1,
                    inverted_residual_setting=DEEP_SETTING)
    if variant in RESNETS:
        return dict(name=variant, norm="batch")
    return dict(name="mobilenet_v2", width_mult=width_mult)  # mobilenet_v2_w<mult>


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = FAMILY.parse(arg)
    c = common.new_config()
    common.imagenet_data(c)
    common.apply_model(c, **_model(args.variant, args.pattern_value))
    c.batch_size = 256 if args.batch is None else args.batch
    c.num_epochs = 150.0 if args.epochs is None else float(args.epochs)
    c.optim.update(dict(name="sgd", lr=0.05, momentum=0.9, weight_decay=4e-5, wd_mask=".*",
                        schedule="cosine", clip_value=0.0))
    if args.warmup:
        c.optim.warmup_epochs = 5.0
    if args.input_size is not None:
        c.dataset.image_size = args.input_size
        c.dataset.eval_resize = int(args.input_size / 0.875)
    common.set_eval_cadence(c, common.IMAGENET_TRAIN // c.batch_size)
    c.log_every_steps = 100
    if args.runlocal:
        common.runlocal(c)
    return c
