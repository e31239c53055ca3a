"""Beyond BatchNorm (Lubana, Dick, Tanaka; docs/proj/beyond_bn.md): every normalizer × every
architecture, GroupNorm group-size sweeps and batch-size sweeps, on CIFAR-100 (or CIFAR-10).

    python -m gnj.main --config=configs/beyond_bn/cifar.py:resnet56,batch --workdir=runs/bb/r56_bn
    python -m gnj.main --config=configs/beyond_bn/cifar.py:vgg10,group,p0.5,b64 --workdir=...

Argument ``<arch>,<norm>[,<option>...]``:

- arch: ``vgg10`` / ``vgg20`` / ``vgg40`` (``--arch VGG --cfg cfg_10/20/40``), ``resnet56``,
  ``resnet56_preact``, ``resnet56_skipinit``, ``resnet56_preact_skipinit`` (the ResNet-56 of
  the reference: widths 32/64/128, 3×3 projection shortcuts).
- norm (``--norm_type``): ``none`` (also ``plain``), ``batch`` (``BN_self``: running stats
  keep 0.9, moving mean initialised to 1 [as-written]), ``layer``, ``instance``, ``group``
  (``GN_self``: unbiased group variance [as-written]; groups from ``p_grouping``, default 32),
  ``frn`` (FRN + TLU, one learnable ε per layer; with warm-up, as the README says FRN is
  trained), ``wn`` (weight-normalised convs + scaled ReLU),
  ``sws`` (scaled weight standardisation), ``evonorm_s0``, ``evonorm_b0``, ``variance``. The
  reference's ``Mean Centering`` crashes (``MC_self`` is undefined) and has no variant.
- options: ``p<x>`` (``--p_grouping``: x > 1 groups, x ≤ 1 inverse group size), ``b<B>``
  (``--batch_size``), ``warmup`` / ``nowarmup`` (``--lr_warmup``), ``lr<x>`` (``--init_lr``),
  ``cifar10`` (``--dataset CIFAR-10``), ``probe`` (``--probe_layers``: the per-iteration probes),
  ``fix_small_batch`` (see below), ``runlocal``.

Recipe (``config.py`` / ``main.py``): SGD momentum 0.9, weight decay 1e-4 on every parameter,
base lr 0.1·256/B, final lr 0.01·256/B (× ``init_lr``), 60 epochs; with warm-up a linear ramp
from 0 over 5 epochs (1 epoch for B = 16) first, then the base lr for ⌊0.75·(E−W)⌋ epochs and
the final lr for the rest; horizontal flip only (no crop), mean = std = 0.5; eval batch = B.
For B < 32 the reference trains 10 epochs but keeps the 60-epoch split, so the lr never decays
[bug, reproduced]; ``fix_small_batch`` splits the 10 epochs 75/25 instead.
"""

from __future__ import annotations

import math

import ml_collections

from configs import common
from gnj.config_args import Family, Option

SQRT2 = math.sqrt(2.0)
KAIMING = f"kaiming_normal(gain={SQRT2})"  # every conv: kaiming_normal(fan_in, relu)
ARCHS: dict[str, dict] = {
    "vgg10": dict(name="vgg", cfg="cfg_10"),
    "vgg20": dict(name="vgg", cfg="cfg_20"),
    "vgg40": dict(name="vgg", cfg="cfg_40"),
    "resnet56": dict(name="resnet56_lubana", preact=False, skipinit=False),
    "resnet56_preact": dict(name="resnet56_lubana", preact=True, skipinit=False),
    "resnet56_skipinit": dict(name="resnet56_lubana", preact=False, skipinit=True),
    "resnet56_preact_skipinit": dict(name="resnet56_lubana", preact=True, skipinit=True),
}
NORMS: dict[str, tuple[str, str, str]] = {  # --norm_type: (norm, act, conv)
    "none": ("none", "relu", "plain"),  # also ``plain`` (the reference's name)
    "batch": ("batch_lubana", "relu", "plain"),
    "layer": ("layer", "relu", "plain"),
    "instance": ("instance", "relu", "plain"),
    "group": ("group(p={p!r}, unbiased=True)", "relu", "plain"),
    "frn": ("frn", "identity", "plain"),  # the TLU is part of the norm
    "wn": ("none", "wn_scaled_relu", "weight_norm"),
    "sws": ("none", "relu", "sws"),
    "evonorm_s0": ("evonorm_s0", "identity", "plain"),  # EvoNorm replaces the activation
    "evonorm_b0": ("evonorm_b0", "identity", "plain"),
    "variance": ("variance", "relu", "plain"),
}
P_GROUPINGS = (1, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.0000001, 8, 16, 32, 64)
BATCH_SIZES = (256, 128, 64, 32, 16)
VARIANTS = [f"{a},{n}" for a in ARCHS for n in NORMS]
SEGMENTS: dict[str, list[str]] = {
    "norms": [f"{a},{n}" for a in ("vgg10", "resnet56") for n in NORMS],
    "depth": [f"{a},{n}" for a in ("vgg10", "vgg20", "vgg40") for n in NORMS],
    "resnet": [f"{a},{n}" for a in ARCHS if a.startswith("resnet") for n in NORMS],
    "grouping": [f"{a},group,p{p!r}" for a in ("vgg10", "resnet56") for p in P_GROUPINGS],
    "batch_size": [f"{a},{n},b{b}" for a in ("vgg10", "resnet56")
                   for n in ("batch", "group", "layer", "instance") for b in BATCH_SIZES],
}
HALF = (0.5, 0.5, 0.5)  # the reference's mean and std
FAMILY = Family(
    "configs/beyond_bn/cifar.py", variants=VARIANTS, default="resnet56,batch",
    aliases={"plain": "none"},
    options=[Option("p_grouping", float, token="p", default=32.0, metavar="grouping",
                    only=lambda a: a.parts[1] == "group", needs="norm 'group'"),
             Option("batch", int, token="b", default=256),
             Option("warmup", off="nowarmup"),
             Option("init_lr", float, token="lr", default=1.0, metavar="x"),
             Option("cifar10"), Option("probe"), Option("fix_small_batch"), common.RUNLOCAL])
TRAIN_SIZE = 50_000


def lr_recipe(batch_size: int, init_lr: float, warmup: bool, fix_small_batch: bool = False
              ) -> dict:
    """Epochs, base lr, warm-up epochs and the 75/25 split of Beyond-BatchNorm."""
    base = init_lr * 0.1 * 256 / batch_size
    total_for_split = 60.0  # base_epochs = [40, 20]
    epochs = 10.0 if batch_size < 32 else 60.0  # [8, 2] for B < 32
    if fix_small_batch:
        total_for_split = epochs
    warm = (1.0 if batch_size == 16 else 5.0) if warmup else 0.0
    # base lr for ⌊0.75·(E−W)⌋ epochs after the warm-up; gnj's lubana_split counts its split
    # from the end of the warm-up as a fraction of the whole run.
    split_epochs = 0.75 * (total_for_split - warm)
    if split_epochs >= epochs - warm:
        schedule = "constant"  # the small-batch bug: the decay lies past the end of training
    else:
        schedule = f"lubana_split(split={split_epochs / epochs!r}, final_ratio=0.1)"
    return dict(epochs=epochs, lr=base, warmup_epochs=warm, schedule=schedule)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = FAMILY.parse(arg)
    arch, norm_type = args.parts
    p, batch = args.p_grouping, args.batch
    warmup = norm_type == "frn" if args.warmup is None else args.warmup
    norm, act, conv = NORMS[norm_type]
    c = common.new_config()
    c.dataset.name = "cifar10" if args.cifar10 else "cifar100"
    c.dataset.augment.update(dict(crop_padding=0, flip=True))
    c.dataset.mean, c.dataset.std = HALF, HALF
    model = dict(ARCHS[arch], norm=norm.format(p=p), act=act, conv=conv, weight_init=KAIMING)
    if model["name"] == "resnet56_lubana":
        model.update(stem_init=KAIMING, shortcut_init=KAIMING)
    common.apply_model(c, **model)
    recipe = lr_recipe(batch, args.init_lr, warmup, args.fix_small_batch)
    c.optim.update(dict(name="sgd", lr=recipe["lr"], momentum=0.9, weight_decay=1e-4,
                        wd_mask=".*", schedule=recipe["schedule"],
                        warmup_epochs=recipe["warmup_epochs"], clip_value=0.0))
    c.batch_size = c.eval_batch_size = batch
    c.num_epochs = recipe["epochs"]
    common.set_eval_cadence(c, TRAIN_SIZE // batch)
    if args.probe:
        c.analysis.probe_every_steps = 1  # every iteration, as the reference's probes
    if args.runlocal:
        tiny = (dict(cfg=(32, (32, 2), 32)) if model["name"] == "vgg"
                else dict(depth=8, width=32))  # 32 channels: GN / EvoNorm-S0 use 32 groups
        common.runlocal(c, tiny)
        c.analysis.probe_every_steps = 0
    return c
