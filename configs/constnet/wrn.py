"""ConstNet and LeakyNet (Blumenfeld, Gilboa, Soudry; docs/proj/constnet.md): the README's
five ConstNet runs and the LeakyNet sweep of ``lrnet_experiment.sh``.

    python -m gnj.main --config=configs/constnet/wrn.py:constnet --workdir=runs/constnet/vanilla
    python -m launch.sweep configs/constnet/wrn.py --segment leakynet --root runs/leakynet

ConstNet runs (WRN-16-10 single-conv blocks, ``--batchnorm``, 300 epochs, ``--no-saves``):

======================== ==================================================================
``constnet``             vanilla ConstNet; cuDNN's non-determinism breaks the symmetry
``constnet_he``          ``--varnet``: random He (fan_out) init baseline
``constnet_deterministic``  ``--cudaNoise``: deterministic cuDNN, no symmetry breaking
``constnet_cuda_dropout``   ``--droprate 0.01`` (+ cuDNN noise)
``constnet_dropout``     ``--droprate 0.01 --cudaNoise``: dropout as the only breaker
======================== ==================================================================

XLA is deterministic, so "cuDNN noise" is the explicit stand-in ``noise_scale`` =
``CUDNN_NOISE`` (forward and backward N(0, s²) on every conv output, gnj.nn.noise); the
deterministic runs use 0. Option ``noise<s>`` sets another scale.

LeakyNet runs (``leakynet_<init>``): depth 16, widen 10, ``--batchnorm`` (BN after odd blocks),
lr 0.03, leaky slope 0.01, 200 epochs (the script passes no ``--epochs``), inits
``h_hhhh_hhhh_hhhh``, ``i_iiii_iiii_iiii``, ``1_iiii_iiii_iiii``, ``1_iiii_11ii_iiii``,
``1_iiii_1111_iiii``, ``1_ii11_ii11_ii11``, ``1_1111_1111_1111``.

Recipe (``train.py``): SGD momentum 0.9 (no Nesterov), weight decay 5e-4 on every parameter,
lr 0.03, batch 128, ×0.2 at epochs E−140, E−80, E−40; reflect-pad 4 + random crop + flip;
mean [125.3, 123.0, 113.9]/255, std [63.0, 62.1, 66.7]/255.

Every run logs ConstNet's weight correlations (``corr/<layer>/{forward,backward,correlations}``
as −log|ρ|) and ``corr/diversity`` once per epoch (``analysis.correlations_every_steps``).

Options: ``runlocal``, ``e<N>`` (epochs), ``lr<x>``, ``noise<s>``, ``cifar100``,
``double_forward`` (evaluate each ConstNet stage twice and keep the second, as the reference's
``NetworkBlock.forward`` [as-written]), ``fixup`` (no ``--batchnorm``: the Fixup path),
``digits`` (ConstNet runs only: the offline CPU stand-in, scikit-learn's 8×8 digits with a
WRN-10-1 (2 single-conv blocks per stage, 16/32/64 channels), reflect-pad-1 crop, no flip,
30 epochs unless ``e<N>`` says otherwise, the three ×0.2 drops at the same fractions of the run,
evaluation and weight correlations every epoch).

The CPU symmetry-breaking reproduction of the README (segment ``digits``: no breaker, the
noise op at 1e-6, 1e-3 and 1e-2, dropout alone, and the random He init):

    python -m launch.sweep configs/constnet/wrn.py --segment digits --root runs/repro/constnet
    python -m gnj.report runs/repro/constnet
"""

from __future__ import annotations

import ml_collections

from configs import common
from gnj.config_args import Family, Option

CUDNN_NOISE = 1e-6
LEAKYNET_INITS = ("h_hhhh_hhhh_hhhh", "i_iiii_iiii_iiii", "1_iiii_iiii_iiii",
                  "1_iiii_11ii_iiii", "1_iiii_1111_iiii", "1_ii11_ii11_ii11",
                  "1_1111_1111_1111")
CONSTNET: dict[str, dict] = {
    "constnet": dict(noise_scale=CUDNN_NOISE),
    "constnet_he": dict(varnet=True, noise_scale=CUDNN_NOISE),
    "constnet_deterministic": dict(noise_scale=0.0),
    "constnet_cuda_dropout": dict(droprate=0.01, noise_scale=CUDNN_NOISE),
    "constnet_dropout": dict(droprate=0.01, noise_scale=0.0),
}
LEAKYNET = {f"leakynet_{s}": s for s in LEAKYNET_INITS}
SEGMENTS = {
    "readme": list(CONSTNET),
    "leakynet": list(LEAKYNET),
    # the README's CPU reproduction on digits: which symmetry breakers make ConstNet train
    "digits": ["constnet_deterministic,digits", "constnet,digits", "constnet,digits,noise0.001",
               "constnet,digits,noise0.01", "constnet_dropout,digits", "constnet_he,digits"],
}
VARIANTS = [*CONSTNET, *LEAKYNET]
CIFAR_MEAN = tuple(v / 255 for v in (125.3, 123.0, 113.9))  # the reference's constants
CIFAR_STD = tuple(v / 255 for v in (63.0, 62.1, 66.7))


def _constnet_run(args) -> bool:
    return args.variant in CONSTNET


FAMILY = Family(
    "configs/constnet/wrn.py", variants=VARIANTS, default="constnet",
    options=[common.RUNLOCAL, Option("epochs", int, token="e"), Option("lr", float, metavar="x"),
             Option("noise", float, metavar="scale"), Option("cifar100"),
             Option("double_forward", only=_constnet_run, needs="ConstNet runs"),
             Option("fixup"), Option("digits", only=_constnet_run, needs="ConstNet runs")])
DIGITS_TRAIN, DIGITS_EPOCHS = 1437, 30.0


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = FAMILY.parse(arg)
    variant = args.variant
    c = common.new_config()
    c.dataset.name = "cifar10"
    c.dataset.augment.update(dict(crop_padding=4, pad_mode="reflect", flip=True))
    c.dataset.mean, c.dataset.std = CIFAR_MEAN, CIFAR_STD
    if variant in CONSTNET:
        common.apply_model(c, "wrn_constnet", depth=16, widen_factor=10, norm="batch",
                           varnet=False, droprate=0.0, dropl1=False, noise_scale=0.0,
                           double_forward=False)
        c.model.update(CONSTNET[variant])
        c.num_epochs = 300.0
    else:
        common.apply_model(c, "leakynet", init_string=LEAKYNET[variant], depth=16,
                           widen_factor=10, lrelu=0.01, norm="batch", droprate=0.0,
                           noise_scale=CUDNN_NOISE, fc_noise=0.0)
        c.num_epochs = 200.0
    c.optim.update(dict(name="sgd", lr=0.03, momentum=0.9, nesterov=False, weight_decay=5e-4,
                        wd_mask=".*", schedule="wrn(drops=(140, 80, 40), factor=0.2)",
                        clip_value=0.0))
    c.batch_size, c.eval_batch_size = 128, 400
    if args.cifar100:
        c.dataset.name = "cifar100"
    if args.double_forward:
        c.model.double_forward = True
    if args.fixup:
        c.model.norm = "none"
    if args.lr is not None:
        c.optim.lr = args.lr
    if args.noise is not None:
        c.model.noise_scale = args.noise
    epochs_given = None if args.epochs is None else float(args.epochs)
    common.set_eval_cadence(c, 50_000 // c.batch_size)
    if args.digits:
        _digits(c, epochs_given)
    elif epochs_given is not None:
        c.num_epochs = epochs_given
    if args.runlocal:
        common.runlocal(c)
    # Weight correlations and Diversity once per epoch (= per evaluation), as the reference logs
    # them (its correlation.py; docs/proj/constnet.md).
    c.analysis.correlations_every_steps = c.eval_every_steps
    return c


def _digits(c: ml_collections.ConfigDict, epochs: float | None) -> None:
    """The offline CPU stand-in of a ConstNet run (option ``digits``); see the module doc."""
    reference_epochs = c.num_epochs
    c.num_epochs = DIGITS_EPOCHS if epochs is None else epochs
    c.dataset.name = "digits"
    c.dataset.mean, c.dataset.std = (), ()
    c.dataset.augment.update(dict(crop_padding=1, pad_mode="reflect", flip=False))
    c.model.update(dict(depth=10, widen_factor=1))
    drops = common.scaled_milestones((140, 80, 40), c.num_epochs, reference_epochs)
    c.optim.schedule = f"wrn(drops={drops!r}, factor=0.2)"
    steps_per_epoch = DIGITS_TRAIN // c.batch_size
    common.set_eval_cadence(c, steps_per_epoch)
    c.checkpoint_every_steps = 10 * steps_per_epoch
    c.eval_batch_size = 360
