"""NN-Mass MLPs (Bhardwaj, Li, Marculescu; docs/proj/nn_mass.md): ``train_mlp.py`` and
``ldi.py``.

    python -m gnj.main --config=configs/nn_mass/mlp.py:readme --workdir=runs/nn_mass/mlp_d8w8tc10
        # = python train_mlp.py --depth=8 --width=8 --tc=10 --dataset='MNIST'
    python -m gnj.main --config=configs/nn_mass/mlp.py:ldi --workdir=runs/nn_mass/ldi --mode=analyze
        # = python ldi.py --depth=8 --width=8 --tc=10 --dataset='MNIST'  (LDI and NN-Mass)
    python -m launch.sweep configs/nn_mass/mlp.py --variants readme --repeats 5 --root runs/mlp
        # --iter_times 5: a new random topology per repeat (model.topology_seed = repeat)

Variants: ``mnist`` (the script defaults: depth 4, width 8, tc 20), ``readme`` / ``ldi``
(depth 8, width 8, tc 10), ``linear`` / ``circle`` (the synthetic 2-D sets, ``num_seg`` 2),
``digits`` (offline stand-in for MNIST: scikit-learn's 8×8 digits, 64-d input, the MNIST recipe
(batch 64, inputs in [0, 1]), 20 epochs, depth 8, width 8, tc 10).

The CPU reproduction of the README (segment ``digits_mass``: accuracy after training, and LDI at
initialisation from ``--mode analyze`` on fresh workdirs):

    python -m launch.sweep configs/nn_mass/mlp.py --segment digits_mass --root runs/repro/nn_mass
    python -m launch.sweep configs/nn_mass/mlp.py --segment digits_mass --mode analyze \
        --root runs/repro/nn_mass_ldi
    python -m gnj.report runs/repro/nn_mass && python -m gnj.report runs/repro/nn_mass_ldi
Options: ``d<depth>``, ``w<width>``, ``tc<tc>``, ``seg<num_seg>``, ``e<epochs>``, ``runlocal``.

Recipe: Adam lr 0.001, 1 epoch, no weight decay; MNIST is only scaled to [0, 1] (ToTensor, no
mean/std) with train batch 64 (the script ignores ``--batch_size`` for MNIST [as-written]) and
test batch 100; the synthetic sets use batch 100. The model is ``dense_mlp`` (ELU, PyTorch
default init, random concatenation links sampled from ``topology_seed``). For ``ldi`` the
analysis takes 100 test samples (``ldi.py`` requires batch 100); it analyses the newest
checkpoint of the workdir, or the initialisation if there is none.
"""

from __future__ import annotations

import ml_collections

from configs import common
from gnj.config_args import Family, Option

RUNS: dict[str, dict] = {
    "mnist": dict(dataset="mnist", depth=4, width=8, tc=20),
    "readme": dict(dataset="mnist", depth=8, width=8, tc=10),
    "ldi": dict(dataset="mnist", depth=8, width=8, tc=10),
    "linear": dict(dataset="nn_mass_linear", depth=4, width=8, tc=20),
    "circle": dict(dataset="nn_mass_circle", depth=4, width=8, tc=20),
    # offline stand-in for MNIST (scikit-learn's 8×8 digits, the MNIST recipe, 20 epochs)
    "digits": dict(dataset="digits", depth=8, width=8, tc=10, epochs=20),
}
VARIANTS = list(RUNS)
SEGMENTS = {
    "readme": ["readme"],
    "synthetic": ["linear", "circle"],
    # NN-Mass vs accuracy: one width/depth, growing numbers of long-range links
    "tc_sweep": [f"readme,tc{tc}" for tc in (0, 2, 5, 10, 15, 20, 30, 40)],
    # the README's CPU reproduction: width 8, depths 8 and 16, matched NN-Mass pairs
    # (tc 0/3/10/30 → NN-Mass 0/6.9/22.1/52.6 at depth 8, 0/6.4/21.0/57.6 at depth 16)
    "digits_mass": [f"digits,d{d},w8,tc{tc}" for d in (8, 16) for tc in (0, 3, 10, 30)],
}
#: Config keys the sweep launcher sets to the repeat index (--iter_times: a new topology each).
SEED_KEYS = ("seed", "model.topology_seed")
FAMILY = Family(
    "configs/nn_mass/mlp.py", variants=VARIANTS, default="mnist",
    options=[Option("depth", int, token="d"), Option("width", int, token="w"),
             Option("tc", int), Option("num_seg", int, token="seg"),
             Option("epochs", int, token="e"), common.RUNLOCAL])


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = FAMILY.parse(arg)
    run = dict(RUNS[args.variant])
    run.update({k: args.values[k] for k in ("tc", "depth", "width", "epochs")
                if args.values[k] is not None})
    c = common.new_config()
    c.dataset.name = run["dataset"]
    c.dataset.num_seg = 2 if args.num_seg is None else args.num_seg
    common.apply_model(c, "dense_mlp", width=run["width"], depth=run["depth"], tc=run["tc"],
                       topology_seed=0, act="elu", weight_init="torch_default",
                       strict_tc=False)  # the reference clamps tc to the link pool
    if c.dataset.name == "mnist":
        c.dataset.mean, c.dataset.std = (0.0,), (1.0,)
        c.batch_size, train_size = 64, 60_000
    elif c.dataset.name == "digits":
        c.dataset.mean, c.dataset.std = (0.0,), (1.0,)
        c.batch_size, train_size = 64, 1437
    else:
        c.batch_size, train_size = 100, 12_000
    c.eval_batch_size = 100
    c.optim.update(dict(name="adam", lr=0.001, momentum=0.0, weight_decay=0.0,
                        schedule="constant", clip_value=0.0))
    c.num_epochs = float(run.get("epochs", 1))
    common.set_eval_cadence(c, train_size // c.batch_size)
    c.analysis.num_samples = 100
    if args.runlocal:
        common.runlocal(c, dict(width=4, depth=min(run["depth"], 4), tc=min(run["tc"], 3)))
        c.analysis.num_samples = 8
    return c
