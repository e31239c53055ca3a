"""Gradient Norm Equality, CIFAR-10: every run of the reference catalogue (Chen et al.;
docs/proj/gne.md), one variant per run, named as the reference's ``--list`` names.

    python -m gnj.main --config=configs/gne/cifar.py:orth_tanh --workdir=runs/gne/orth_tanh
    python -m launch.sweep configs/gne/cifar.py --segment initialization --repeats 4 --start 0 \
        --root runs/gne_init          # = bash cifar10.sh <data> initialization <gpu> 4 0

Segments (``SEGMENTS``, the reference's ``--type``): ``initialization`` (25 runs: BN baselines,
kaiming / orthogonal / delta-orthogonal without norm, leaky-slope sweep), ``norm`` (4: weight
norm + mean-only BN, SMN, Chen's WN, L1-MN), ``selu`` (8: SELU and the depth-aware SeLUv2),
``densenet`` (the 1 active run; ``densenet_all`` adds the 5 commented-out ones), ``resnet``
(8: ResNet-56 BN / Fixup / SMN ± mixup).

Recipe of the reference (the ``Estimator``): SGD momentum 0.9, weight decay 5e-4 on conv and
linear parameters only (biases included, norm parameters excluded), gradient values clipped at
2.0 every step, batch 128, random crop (zero-pad 4) + flip, mean (0.4914, 0.4822, 0.4465) /
std (0.2023, 0.1994, 0.2010), lr ÷10 at the segment's milestones (serial nets: 80; DenseNet:
50, 80 when lr = 0.1; ResNet-56: 100, 150). Mixup α = 1 for ``*_mixup`` runs.

Options (after a comma): ``runlocal`` (seconds on a CPU), ``e<N>`` (N epochs), ``full`` (``wn32``
only: 130 epochs instead of the reference's 4 [as-written]), ``digits`` (the offline CPU stand-in:
scikit-learn's 8×8 digits with the variant's model, init and optimizer unchanged, pad-1 crop and
no flip, 30 epochs unless ``e<N>`` says otherwise, the milestones at the same fractions of the
run, evaluation every epoch and the per-layer probes, ``grad_l2/*`` included, every 3 epochs on
64 training images).

The CPU initialization comparison of the README (segment ``digits_init``: SerialNet-32 without
norm, ReLU, Kaiming vs orthogonal vs delta-orthogonal, on digits):

    python -m launch.sweep configs/gne/cifar.py --segment digits_init --options digits \
        --root runs/repro/gne_init && python -m gnj.report runs/repro/gne_init
"""

from __future__ import annotations

import math

import ml_collections

from configs import common
from gnj.config_args import Family, Option

SQRT2 = math.sqrt(2.0)
#: Modules whose parameters GNEDNN decays (names containing 'conv' or 'linear'): convs, the
#: classifier and their biases; norm parameters, activation slopes and Fixup scalars excluded.
WD_MASK = r"(^|/)(stem|head|fc|classifier|linear|conv\w*|shortcut_conv|Conv_\d+|Dense_\d+)/"
INITS = {"km": "kaiming_normal", "orth": "orthogonal", "dorth": "delta_orthogonal"}
ACTS = {"relu": "relu", "tanh": "tanh", "lrelu": "leaky_relu(negative_slope=0.18)",
        "lrelu3": "leaky_relu(negative_slope=0.3)", "lrelu5": "leaky_relu(negative_slope=0.5)",
        "prelu": "prelu", "sprelu": "sprelu"}


def _serial(norm: str, act: str, init: str, conv: str = "plain") -> dict:
    """SerialNet-32 (31 convs + FC): every conv with the run's init (GNEDNN ``initialization``)."""
    return dict(name="serial_net", depth=32, width=16, norm=norm, act=act, weight_init=init,
                stem_init=init, head_init=f"kaiming_normal(gain={SQRT2})", conv=conv)


def _seluv2(gain: float, eps: float) -> tuple[str, str]:
    """(activation, init suffix) of a SeLUv2 run: γ = gain², fixpoint 1."""
    return f"seluv2(gamma={gain * gain!r}, fixpoint=1.0, epsilon={eps!r})", f"(gain={gain!r})"


def _initialization_runs() -> dict[str, dict]:
    runs: dict[str, dict] = {}
    for act in ("relu", "tanh", "lrelu", "prelu"):
        runs[f"bn_{act}"] = _serial("batch", ACTS[act], "kaiming_normal")
    for prefix in ("km", "orth", "dorth"):
        for act in ("relu", "tanh", "lrelu", "prelu", "sprelu"):
            runs[f"{prefix}_{act}"] = _serial("none", ACTS[act], INITS[prefix])
    for prefix, norm, init in (("bn", "batch", "kaiming_normal"), ("orth", "none", "orthogonal"),
                               ("dorth", "none", "delta_orthogonal")):
        for act in ("lrelu3", "lrelu5"):
            runs[f"{prefix}_{act}"] = _serial(norm, ACTS[act], init)
    return {k: dict(model=v, lr=0.01) for k, v in runs.items()}


def _selu_runs() -> dict[str, dict]:
    runs: dict[str, dict] = {}
    for prefix in ("km", "orth"):
        init = INITS[prefix]
        runs[f"{prefix}_selu"] = _serial("none", "selu", f"{init}(gain=1.0)")
        for name, gain, eps in (("g1_e7", 1.0, 0.0716), ("g1_e3", 1.0, 0.03),
                                ("g2_e3", 1.4142535, 0.03)):
            act, suffix = _seluv2(gain, eps)
            runs[f"{prefix}_seluv2_{name}"] = _serial("none", act, init + suffix)
    return {k: dict(model=v, lr=0.01) for k, v in runs.items()}


def _norm_runs() -> dict[str, dict]:
    relu, km = "relu", "kaiming_normal"
    return {
        # weight norm (torch nn.utils.weight_norm) + mean-only BN; 4 epochs [as-written]
        "wn32": dict(model=_serial("mean_only", relu, km, "weight_norm_torch"), lr=0.01,
                     epochs=4.0),
        "l2norm": dict(model=_serial("smn", relu, km, "centered"), lr=0.01),  # SMN
        "wn": dict(model=_serial("none", relu, km, "normed"), lr=0.01),  # Chen's WN config
        "l1norm": dict(model=_serial("l1n", relu, km, "centered"), lr=0.01),
    }


def _densenet(norm: str, act: str, init: str, conv: str = "plain") -> dict:
    return dict(name="densenet_cifar", norm=norm, act=act, weight_init=init, conv=conv)


def _densenet_runs() -> dict[str, dict]:
    act, suffix = _seluv2(1.414265, 0.03)
    runs = {
        "dn_orth_seluv2_g2_e3": _densenet("none", act, "orthogonal" + suffix),
        # commented out in the reference's exp_list
        "dn_bn": _densenet("batch", "relu", "kaiming_normal"),
        "dn_km_relu": _densenet("none", "relu", "kaiming_normal"),
        "dn_orth_lrelu3": _densenet("none", ACTS["lrelu3"], "orthogonal"),
        "dn_l2norm": _densenet("smn", "relu", "kaiming_normal", "centered"),
        "dn_wn": _densenet("none", "relu", "kaiming_normal", "normed"),
    }
    return {k: dict(model=v, lr=0.1, epochs=130.0) for k, v in runs.items()}


def _resnet(norm: str = "batch", conv: str = "plain", fixup_p: float | None = None,
            bns: bool = False) -> dict:
    # Fixup scalars (the 's' runs): the paper's fixup_resnet_cifar (gnj/proj/gne/models.py)
    m = dict(name="fixup_resnet_cifar" if bns else "resnet_cifar", depth=56, width=16,
             shortcut="A", norm=norm, act="relu", conv=conv)
    if fixup_p is not None:  # gain × L^(−p/(2m)), L = (56 − 2)/2 = 27, m = 2
        m["weight_init"] = f"fixup(num_layers=27, m=2, variant='cifar', p={fixup_p!r})"
    return m


def _resnet_runs() -> dict[str, dict]:
    runs = {
        "res_bn": dict(model=_resnet()),
        "res_bn_mixup": dict(model=_resnet(), mixup=1.0),
        "res_fixup2s_mixup": dict(model=_resnet("none", fixup_p=2.0, bns=True), mixup=1.0),
        "res_fixup2s": dict(model=_resnet("none", fixup_p=2.0, bns=True)),
        "res_fixup2": dict(model=_resnet("none", fixup_p=2.0)),
        "res_fixup1_5s_mixup": dict(model=_resnet("none", fixup_p=1.5, bns=True), mixup=1.0),
        "res_l2norm": dict(model=_resnet("smn", "centered")),
        "res_l2norm_mixup": dict(model=_resnet("smn", "centered"), mixup=1.0),
    }
    for r in runs.values():
        r.update(lr=0.1, epochs=200.0, milestones=(100, 150))
    return runs


RUNS: dict[str, dict] = {**_initialization_runs(), **_norm_runs(), **_selu_runs(),
                         **_densenet_runs(), **_resnet_runs()}
SEGMENTS: dict[str, list[str]] = {
    "initialization": list(_initialization_runs()),
    "norm": list(_norm_runs()),
    "selu": list(_selu_runs()),
    "densenet": ["dn_orth_seluv2_g2_e3"],
    "densenet_all": list(_densenet_runs()),
    "resnet": list(_resnet_runs()),
    # the README's CPU comparison (with option ``digits``): init schemes, no norm, ReLU
    "digits_init": ["km_relu", "orth_relu", "dorth_relu"],
}
VARIANTS: list[str] = list(RUNS)
#: Size of the offline digits stand-in (``digits`` option): 1,437 training images.
DIGITS_TRAIN = 1437
DIGITS_EPOCHS = 30.0
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)  # the reference's constants (not the dataset's own)
FAMILY = Family(
    "configs/gne/cifar.py", variants=VARIANTS, default="bn_relu",
    options=[common.RUNLOCAL, Option("epochs", int, token="e"),
             Option("full", only=lambda a: a.variant == "wn32", needs="wn32 at 130 epochs"),
             Option("digits")])


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = FAMILY.parse(arg)
    run = RUNS[args.variant]
    c = common.new_config()
    c.dataset.name = "cifar10"
    c.dataset.augment.update(dict(crop_padding=4, pad_mode="constant", flip=True))
    c.dataset.mean, c.dataset.std = CIFAR10_MEAN, CIFAR10_STD
    common.apply_model(c, **run["model"])
    lr = run["lr"]
    if "milestones" in run:
        milestones = run["milestones"]
    elif run["model"]["name"] == "densenet_cifar":
        milestones = (50, 80) if lr == 0.1 else (80,)
    else:
        milestones = (80,)
    c.optim.update(dict(name="sgd", lr=lr, momentum=0.9, weight_decay=5e-4, wd_mask=WD_MASK,
                        schedule=f"multistep(milestones={tuple(milestones)!r}, multiplier=0.1)",
                        clip_value=2.0))
    if run["model"]["name"] == "fixup_resnet_cifar":
        # Fixup scalars (biasN, scale) at lr/10; every group decayed with 1e-4
        c.optim.update(dict(weight_decay=1e-4, wd_mask=".*", lr_mult_regex=r"(bias\d|scale)$",
                            lr_mult=0.1, wd_mult=1.0))
    c.mixup_alpha = run.get("mixup", 0.0)
    c.batch_size, c.eval_batch_size = 128, 400
    c.num_epochs = 130.0 if args.full else run.get("epochs", 130.0)
    common.set_eval_cadence(c, 50_000 // c.batch_size)
    epochs = None if args.epochs is None else float(args.epochs)
    if args.digits:
        _digits(c, milestones, epochs)
    elif epochs is not None:
        c.num_epochs = epochs
    if args.runlocal:
        common.runlocal(c)
    return c


def _digits(c: ml_collections.ConfigDict, milestones: tuple, epochs: float | None) -> None:
    """The offline CPU stand-in of a CIFAR run (option ``digits``); see the module docstring."""
    reference_epochs = c.num_epochs
    c.num_epochs = DIGITS_EPOCHS if epochs is None else epochs
    c.dataset.name = "digits"
    c.dataset.mean, c.dataset.std = (), ()
    c.dataset.augment.update(dict(crop_padding=1, flip=False))
    scaled = common.scaled_milestones(milestones, c.num_epochs, reference_epochs)
    c.optim.schedule = f"multistep(milestones={scaled!r}, multiplier=0.1)"
    steps_per_epoch = DIGITS_TRAIN // c.batch_size
    common.set_eval_cadence(c, steps_per_epoch)
    c.checkpoint_every_steps = 10 * steps_per_epoch
    c.eval_batch_size = 360
    c.analysis.probe_every_steps = 3 * steps_per_epoch
    c.analysis.probe_max_examples = 64
