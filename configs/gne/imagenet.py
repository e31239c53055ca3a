"""Gradient Norm Equality, ImageNet: the README's MobileNet and ResNet-50 runs (Chen et al.;
docs/proj/gne.md). One variant per README command, named by its ``--log``.

    python -m gnj.main --config=configs/gne/imagenet.py:mobilenet_seluv2_0.03 \
        --workdir=runs/gne_imagenet/mobilenet_seluv2_0.03
    python -m launch.sweep configs/gne/imagenet.py --segment mobilenet --root runs/gne_mobilenet

Data: TFDS ``imagenet2012`` (manual download), RandomResizedCrop 224 + flip, val resize 256 /
centre crop 224, ImageNet mean/std (streamed by ``gnj.data.imagenet``).

**MobileNet** (``mobilenet_v1`` with ``dense=True``: every depthwise-separable pair is one dense
3×3 conv): batch 512, lr 0.02, 90 epochs, ×0.1 at epoch 60 and again at 75, SGD momentum 0.9,
weight decay 4e-5 on conv / fc weights only. Every init uses gain 1 (the script's ``--gain``
default [as-written], so even ReLU runs get std 1/√fan_in); option ``optgain`` uses the
activation's own gain instead. SeLUv2 uses γ = gain² = 1.

**ResNet-50** (batch 256, lr 0.1 × 0.1^(epoch // 30), 90 epochs, momentum 0.9, wd 1e-4):
``resnet50_baseline`` (torchvision, wd on every parameter), ``resnet50_mixup`` (α 0.2),
``resnet50_smn_mixup_0.2`` / ``resnet50_l1mn_mixup_0.2`` (every conv weight-centred, SMN or L1-MN,
α 0.2; wd on conv and fc parameters, *not* on the downsample conv, whose reference name lacks
'conv' [as-written]; option ``wd_downsample`` decays it too), ``resnet50_fixup`` /
``resnet50_fixup_ours`` (Fixup original / GNE's, mixup α 0.7, scalar biases and scales at lr/10
without weight decay, wd 1e-4 on conv / fc weights).

Options: ``runlocal``, ``e<N>`` (epochs), ``b<N>`` (batch size; lr unchanged, as the reference),
``optgain``, ``wd_downsample``.
"""

from __future__ import annotations

import ml_collections

from configs import common
from gnj.config_args import Family, Option

LRELU = "leaky_relu(negative_slope=0.3)"
SELUV2 = "seluv2(gamma=1.0, fixpoint=1.0, epsilon={eps!r})"

MOBILENET: dict[str, tuple[str, str, str]] = {  # --log: (norm, act, init)
    "mobilenet_bn_dense": ("batch", "relu", "kaiming_normal"),
    "mobilenet_relu_dense": ("none", "relu", "kaiming_normal"),
    "mobilenet_selu_dense": ("none", "selu", "kaiming_normal"),
    "mobilenet_seluv2_0.06": ("none", SELUV2.format(eps=0.065), "kaiming_normal"),  # ε 0.065
    "mobilenet_seluv2_0.03": ("none", SELUV2.format(eps=0.03), "kaiming_normal"),
    "mobilenet_lrelu_dense": ("none", LRELU, "kaiming_normal"),
    "mobilenet_lrelu_dense_orth": ("none", LRELU, "orthogonal"),
    "mobilenet_lrelu_dense_dorth": ("none", LRELU, "delta_orthogonal"),
}
RESNET50: dict[str, dict] = {
    "resnet50_baseline": dict(model=dict(name="resnet50", norm="batch")),
    "resnet50_mixup": dict(model=dict(name="resnet50", norm="batch"), mixup=0.2),
    "resnet50_smn_mixup_0.2": dict(model=dict(name="resnet50", norm="smn", conv="centered"),
                                   mixup=0.2, wd="mn"),
    "resnet50_l1mn_mixup_0.2": dict(model=dict(name="resnet50", norm="l1n", conv="centered"),
                                    mixup=0.2, wd="mn"),
    "resnet50_fixup": dict(model=dict(name="fixup_resnet", arch="resnet50", variant="original"),
                           mixup=0.7, wd="fixup"),
    "resnet50_fixup_ours": dict(model=dict(name="fixup_resnet", arch="resnet50", variant="ours"),
                                mixup=0.7, wd="fixup"),
}
SEGMENTS = {"mobilenet": list(MOBILENET), "resnet50": list(RESNET50)}
VARIANTS = [*MOBILENET, *RESNET50]
FAMILY = Family(
    "configs/gne/imagenet.py", variants=VARIANTS, default="mobilenet_bn_dense",
    options=[common.RUNLOCAL, Option("epochs", int, token="e"),
             Option("batch", int, token="b"), Option("optgain"), Option("wd_downsample")])
MN_WD_MASK = r"(^|/)conv\d/|^fc/"  # names with 'conv' (or the fc) in the reference
MN_WD_MASK_ALL = r"(^|/)(conv\d|downsample_conv)/|^fc/"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = FAMILY.parse(arg)
    variant = args.variant
    c = common.new_config()
    common.imagenet_data(c)
    c.num_epochs = 90.0
    c.mixup_alpha = 0.0
    if variant in MOBILENET:
        norm, act, init = MOBILENET[variant]
        common.apply_model(c, "mobilenet_v1", dense=True, width=1.0, norm=norm, act=act,
                           weight_init=init, gain=None if args.optgain else 1.0)
        c.batch_size = 512
        c.optim.update(dict(lr=0.02, weight_decay=4e-5, wd_mask="kernel$",
                            schedule="multistep(milestones=(60, 75), multiplier=0.1)"))
    else:
        run = RESNET50[variant]
        common.apply_model(c, **run["model"])
        c.batch_size = 256
        c.mixup_alpha = run.get("mixup", 0.0)
        c.optim.update(dict(lr=0.1, weight_decay=1e-4, wd_mask=".*",
                            schedule="multistep(milestones=(30, 60), multiplier=0.1)"))
        if run.get("wd") == "mn":
            c.optim.wd_mask = MN_WD_MASK_ALL if args.wd_downsample else MN_WD_MASK
        elif run.get("wd") == "fixup":
            c.optim.update(dict(wd_mask="kernel$", lr_mult_regex="bias|scale", lr_mult=0.1,
                                wd_mult=0.0))
    c.optim.update(dict(name="sgd", momentum=0.9, clip_value=0.0))
    if args.epochs is not None:
        c.num_epochs = float(args.epochs)
    if args.batch is not None:
        c.batch_size = args.batch
    common.set_eval_cadence(c, common.IMAGENET_TRAIN // c.batch_size)
    c.log_every_steps = 100
    if args.runlocal:
        common.runlocal(c)
    return c
