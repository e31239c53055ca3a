"""NN-Mass on ImageNet (Bhardwaj et al.; REFERENCE.md §4.6, §4.7): ``train_imagenet.py``.

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

from configs.gne import common
from configs.gne.imagenet import IMAGENET_TRAIN, imagenet_data

DEEP_SETTING = ((1, 16, 2, 1), (6, 24, 3, 2), (6, 32, 4, 2), (6, 64, 5, 2), (6, 96, 4, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
           "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2")
VARIANTS = ["mobilenet_v2", "mobilenet_v2_w1.0", *RESNETS]
SEGMENTS = {"mobilenet": ["mobilenet_v2"], "resnets": list(RESNETS)}
OPTIONS = "i<input size>, e<epochs>, b<batch>, warmup, runlocal"
FAMILY = "configs/nn_mass/imagenet.py"


def _model(variant: str) -> dict | None:
    if variant == "mobilenet_v2":
        return dict(name="mobilenet_v2_nn_mass_deep", width_mult=1.1,
                    inverted_residual_setting=DEEP_SETTING)
    if variant.startswith("mobilenet_v2_w"):
        mult = common.float_option(variant, "mobilenet_v2_w")
        return None if mult is None else dict(name="mobilenet_v2", width_mult=mult)
    if variant in RESNETS:
        return dict(name=variant, norm="batch")
    return None


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant, options = common.split_arg(arg, "mobilenet_v2")
    model = _model(variant)
    if model is None:
        raise common.unknown_variant(FAMILY, variant, [*VARIANTS, "mobilenet_v2_w<mult>"],
                                     OPTIONS)
    c = common.new_config()
    imagenet_data(c)
    common.apply_model(c, **model)
    c.batch_size = 256
    c.num_epochs = 150.0
    c.optim.update(dict(name="sgd", lr=0.05, momentum=0.9, weight_decay=4e-5, wd_mask=".*",
                        schedule="cosine", clip_value=0.0))
    runlocal = False
    for opt in options:
        size, epochs, batch = (common.int_option(opt, "i"), common.int_option(opt, "e"),
                               common.int_option(opt, "b"))
        if opt == "runlocal":
            runlocal = True
        elif opt == "warmup":
            c.optim.warmup_epochs = 5.0
        elif size is not None:
            c.dataset.image_size = size
            c.dataset.eval_resize = int(size / 0.875)
        elif epochs is not None:
            c.num_epochs = float(epochs)
        elif batch is not None:
            c.batch_size = batch
        else:
            raise common.unknown_option(FAMILY, opt, arg, OPTIONS)
    common.set_eval_cadence(c, IMAGENET_TRAIN // c.batch_size)
    c.log_every_steps = 100
    if runlocal:
        common.runlocal(c)
    return c
