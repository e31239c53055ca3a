"""Default experiment: a BatchNorm CIFAR ResNet-8 on scikit-learn's 8×8 digits (offline).

    python -m gnj.main --config=configs/default.py --workdir=runs/default
    python -m gnj.main --config=configs/default.py:cifar10 --workdir=runs/cifar10_resnet20

Variants (``:arg``): ``""`` (digits, < 3 min on 2 CPU cores), ``cifar10`` (ResNet-20 on TFDS
cifar10, the GNE CIFAR recipe: SGD 0.9, wd 5e-4, crop+flip, 130 epochs), ``runlocal`` (a few
seconds, for smoke tests).
"""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    """Every key a run reads, with defaults; experiment configs start from this."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset = ml_collections.ConfigDict(dict(
        name="digits", data_dir="", num_seg=2,
        augment=ml_collections.ConfigDict(dict(crop_padding=0, pad_mode="constant", flip=False)),
    ))
    c.model = ml_collections.ConfigDict(dict(name="resnet_cifar", depth=8, width=16,
                                             shortcut="A", norm="batch", act="relu",
                                             dtype="float32", param_dtype="float32"))
    # model.dtype: compute dtype (bfloat16 = mixed precision); model.param_dtype: parameters,
    # optimizer state, norm statistics (gnj/precision.py; float64 needs JAX_ENABLE_X64=1)
    c.optim = ml_collections.ConfigDict(dict(
        name="sgd", lr=0.1, momentum=0.9, nesterov=False, schedule="cosine", warmup_epochs=0.0,
        weight_decay=5e-4, wd_mask=".*", lr_mult_regex="", lr_mult=1.0, wd_mult=1.0,
        clip_value=0.0, clip_norm=0.0))
    c.batch_size = 128
    c.eval_batch_size = 200
    c.num_epochs = 40.0
    c.num_steps = 0  # > 0 overrides num_epochs
    c.mixup_alpha = 0.0
    c.log_every_steps = 20
    c.eval_every_steps = 100
    c.checkpoint_every_steps = 100
    c.keep_checkpoints = 3
    c.async_checkpointing = True
    c.restore_from = ""  # init params/state from another run's checkpoint (not a resume)
    c.pretrained = ""  # a torchvision-format .pth file to load into the model (gnj/pretrained.py)
    c.quiet = False
    c.analysis = ml_collections.ConfigDict(dict(
        probe_every_steps=0,  # > 0: per-layer probes during training (gnj/analysis/probes.py)
        probe_max_examples=0,
        correlations_every_steps=0,  # > 0: weight correlations (gnj/analysis/correlations.py)
        correlations_max_rows=5000, num_samples=8, num_probes=16, exact_max_bytes=64 * 2**20,
        lanczos_steps=20, spectrum_probes=4, block_spectra=False, elu_derivative="correct"))
    return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or ""
    c = base_config()
    if variant == "":
        return c
    if variant == "runlocal":
        c.num_steps = 6
        c.log_every_steps = 2
        c.eval_every_steps = 6
        c.checkpoint_every_steps = 3
        c.batch_size = 32
        return c
    if variant == "cifar10":
        c.dataset.name = "cifar10"
        c.dataset.augment.crop_padding = 4
        c.dataset.augment.flip = True
        c.model.depth = 20
        c.optim.schedule = "multistep(milestones=(80,), multiplier=0.1)"
        c.optim.wd_mask = "conv|head|stem"
        c.optim.clip_value = 2.0
        c.eval_batch_size = 500
        c.num_epochs = 130.0
        c.log_every_steps = 100
        c.eval_every_steps = 390
        c.checkpoint_every_steps = 390
        return c
    raise ValueError(f"configs/default.py has no variant {variant!r}; valid: '', runlocal, cifar10")
