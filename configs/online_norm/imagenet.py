"""Online Normalization on ImageNet (Chiley et al.; docs/proj/online_norm.md):
``imagenet_main.py``.

    python -m gnj.main --config=configs/online_norm/imagenet.py:resnet18,online --workdir=...
        # = imagenet_main.py <data> --norm-mode online --afwd 0.999 --abkw 0.99
    python -m gnj.main --config=configs/online_norm/imagenet.py:resnet50,online,e100 --workdir=...
        # the published table's setting (ResNet-50, 100 epochs)

Argument ``<arch>,<norm-mode>[,<option>...]``: arch ``resnet18`` (the script default, what the
README commands train), ``resnet34``, ``resnet50``, ``resnet101``, ``resnet152``,
``resnext50_32x4d``, ``resnext101_32x8d``; norm-mode ``batch`` | ``group`` (32 groups) |
``layer`` (per-element affine) | ``instance`` | ``online`` (αf 0.999, αb 0.99, ECM layer
scaling) | ``none``. Options: ``b<B>`` (batch size with the reference's rule
m′ = m^(B/256), lr′ = lr·(B/256)(1−m′)/(1−m)), ``e<N>`` (epochs), ``runlocal``.

Recipe: torchvision ResNets with the chosen norm everywhere (downsample norms included),
kaiming fan_out init, SGD lr 0.1 momentum 0.9, 90 epochs, ×0.1 at 30/60/80/90, batch 256;
weight decay 1e-4 except on non-fc biases (norm γ and fc.bias are decayed, as the reference's
name filter does [as-written]); RandomResizedCrop 224 + flip, resize 256 + centre crop 224.

Published (docs/proj/online_norm.md, the reference's ``experiments/ExpReproducibility.md``;
ResNet-50, 100 epochs, 1 run, best epoch): top-1 **76.3 %** online (val loss 0.94) vs
**76.4 %** batch (0.97), from

    python -m launch.sweep configs/online_norm/imagenet.py --segment paper --root runs/on_in
    python -m gnj.report runs/on_in      # "best acc" (1 run, so also the median-curve best)
"""

from __future__ import annotations

import ml_collections

from configs import common
from gnj.config_args import Family, Option
from gnj.proj.online_norm.schedules import scale_lr_and_momentum

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
         "resnext101_32x8d")
NORM_MODES = {
    "batch": "batch",
    "group": "group(groups=32)",
    "layer": "layer(affine='element')",
    "instance": "instance",
    "online": "online(preset='imagenet', ecm='ls')",
    "none": "none",
}
VARIANTS = [f"{a},{m}" for a in ARCHS for m in NORM_MODES]
SEGMENTS = {
    "readme": ["resnet18,online", "resnet18,batch"],
    "paper": ["resnet50,online,e100", "resnet50,batch,e100"],
}
#: Decay everything but the biases outside fc (the reference exempts names with 'bias').
WD_MASK = r"^fc/|^(?!.*/bias$)"
FAMILY = Family(
    "configs/online_norm/imagenet.py", variants=VARIANTS, default="resnet18,online",
    options=[Option("batch", int, token="b"), Option("epochs", int, token="e"), common.RUNLOCAL])


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = FAMILY.parse(arg)
    arch, mode = args.parts
    c = common.new_config()
    common.imagenet_data(c)
    common.apply_model(c, arch, norm=NORM_MODES[mode],
                       weight_init="kaiming_normal(mode='fan_out', gain=1.4142135623730951)",
                       zero_init_residual=False)
    c.optim.update(dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, wd_mask=WD_MASK,
                        schedule="multistep(milestones=(30, 60, 80, 90), multiplier=0.1)",
                        clip_value=0.0))
    c.batch_size = 256
    c.num_epochs = 90.0
    if args.batch is not None:
        c.batch_size = args.batch
        c.optim.lr, c.optim.momentum = scale_lr_and_momentum(0.1, 0.9, args.batch, 256)
    if args.epochs is not None:
        c.num_epochs = float(args.epochs)
    common.set_eval_cadence(c, common.IMAGENET_TRAIN // c.batch_size)
    c.log_every_steps = 100
    if args.runlocal:
        common.runlocal(c)
    return c
