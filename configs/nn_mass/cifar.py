"""NN-Mass dense CNNs on CIFAR (Bhardwaj et al.; docs/proj/nn_mass.md): ``train_cifar.py``.

    python -m gnj.main --config=configs/nn_mass/cifar.py:readme --workdir=runs/nn_mass/cnn_readme
        # = train_cifar.py --num_cells=3 --cell_depth=8 --wm=2 --tc1=10 --tc2=20 --tc3=40
        #   --arch regular_dense

Variants: ``dense_depth`` (the script default: depth-wise dense cells, cell depth 13,
tc 40/80/125), ``regular_dense`` (regular 3×3 dense cells, same sizes), ``readme`` (regular,
cell depth 8, tc 10/20/40). Options: ``d<cell_depth>``, ``tc<a>_<b>_<c>``, ``cifar100``,
``e<epochs>``, ``bn_train`` (train the BatchNorms; the reference builds its layers in eval mode
and never switches them, so every BN is a fixed affine map [as-written, the default]),
``fix_tc0`` (keep the BN output of a layer with no links; the reference discards it [bug,
the default]), ``runlocal``.

Recipe: SGD lr 0.1, momentum 0.9, weight decay 5e-4 on every parameter, batch 128, 10 epochs,
cosine annealing to 0. CIFAR-10 has no augmentation and mean (0.4914, 0.4822, 0.4465) / std
(0.2023, 0.1994, 0.2010); CIFAR-100 random crop (pad 4) + flip and mean (0.5071, 0.4866,
0.4409) / std (0.2009, 0.1984, 0.2023) (the reference's Cutout(4) is not part of gnj's
augmentation). ``--wm`` is ignored by the reference (always 2) and is fixed at 2 here.
"""

from __future__ import annotations

import ml_collections

from configs import common
from gnj.config_args import Family, Ints, Option

RUNS: dict[str, dict] = {
    "dense_depth": dict(name="dense_cnn_depthwise", cell_depth=13, tc=(40, 80, 125)),
    "regular_dense": dict(name="dense_cnn", cell_depth=13, tc=(40, 80, 125)),
    "readme": dict(name="dense_cnn", cell_depth=8, tc=(10, 20, 40)),
}
VARIANTS = list(RUNS)
SEGMENTS = {"readme": ["readme"], "default": ["dense_depth", "regular_dense"]}
SEED_KEYS = ("seed",)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4866, 0.4409), (0.2009, 0.1984, 0.2023)
FAMILY = Family(
    "configs/nn_mass/cifar.py", variants=VARIANTS, default="dense_depth",
    options=[Option("cell_depth", int, token="d"), Option("tc", Ints, metavar="a>_<b>_<c"),
             Option("cifar100"), Option("epochs", int, token="e"), Option("bn_train"),
             Option("fix_tc0"), common.RUNLOCAL])


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = FAMILY.parse(arg)
    run = dict(RUNS[args.variant])
    c = common.new_config()
    c.dataset.name = "cifar10"
    c.dataset.mean, c.dataset.std = CIFAR10_MEAN, CIFAR10_STD
    c.num_epochs = 10.0 if args.epochs is None else float(args.epochs)
    if args.cifar100:
        c.dataset.name = "cifar100"
        c.dataset.mean, c.dataset.std = CIFAR100_MEAN, CIFAR100_STD
        c.dataset.augment.update(dict(crop_padding=4, flip=True))
    if args.tc is not None:
        run["tc"] = args.tc
    if args.cell_depth is not None:
        run["cell_depth"] = args.cell_depth
    bn_eval, tc0_bug = not args.bn_train, not args.fix_tc0
    common.apply_model(c, run["name"], num_cells=len(run["tc"]), cell_depth=run["cell_depth"],
                       wm=2, tc=tuple(run["tc"]), topology_seed=2, bn_eval_quirk=bn_eval,
                       tc0_bn_bug=tc0_bug)
    c.optim.update(dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, wd_mask=".*",
                        schedule="cosine", clip_value=0.0))
    c.batch_size, c.eval_batch_size = 128, 400
    common.set_eval_cadence(c, 50_000 // c.batch_size)
    if args.runlocal:
        common.runlocal(c)
    return c
