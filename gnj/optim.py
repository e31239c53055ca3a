"""Optax optimizers from a config section, with schedules, masked weight decay, per-group lr.

Config (``config.optim``)::

    name="sgd" | "momentum" | "nesterov" | "adam" | "adamw" | "radam"
    lr, momentum, nesterov, b1, b2, eps
    schedule="constant" | "multistep(milestones=(80, 120), multiplier=0.1)" | "cosine" |
             any other name of gnj.registry.SCHEDULES (milestones in epochs, converted with
             the steps per epoch)
    warmup_epochs      linear warm-up from 0 to lr over that many epochs (0: none)
    weight_decay       L2 added to the gradient (PyTorch SGD semantics), on params whose
    wd_mask            '/'-joined path matches this regex (``re.search``; "" = none)
    lr_mult_regex      params whose path matches get their step scaled by
    lr_mult            (Fixup scalars at lr/10: ``lr_mult_regex="bias|scale", lr_mult=0.1``)
    wd_mult            weight decay multiplier for the lr_mult group (e.g. 0 for Fixup scalars)
    clip_value, clip_norm   gradient clipping by value / by global norm (0: off)

The chain is ``clip → decay(masked) → optimizer(lr schedule) → per-group scale``. For SGD this is
PyTorch's ``SGD(weight_decay=wd)`` exactly: ``v ← m·v + (g + wd·w)``, ``w ← w − lr·v``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import optax

from gnj.registry import OPTIMIZERS, SCHEDULES
from gnj.state import path_str


def path_mask(regex: str, invert: bool = False) -> Callable[[Any], Any]:
    """A mask function for optax: True where the param path matches ``regex``."""
    pattern = re.compile(regex) if regex else None

    def mask(params):
        def leaf(path, _):
            hit = bool(pattern.search(path_str(path))) if pattern else False
            return hit != invert

        return jax.tree_util.tree_map_with_path(leaf, params)

    return mask


# ----------------------------------------------------------------------------- schedules
# A schedule factory: (base_lr, steps_per_epoch, total_steps, **kw) -> optax.Schedule.


@SCHEDULES.register("constant")
def constant(base_lr: float, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    return optax.constant_schedule(base_lr)


@SCHEDULES.register("multistep")
def multistep(base_lr: float, steps_per_epoch: int, total_steps: int,
              milestones: tuple[float, ...] = (), multiplier: float = 0.1) -> optax.Schedule:
    """lr·multiplier^(number of milestones passed); milestones in epochs (PyTorch MultiStepLR)."""
    bounds = {int(round(m * steps_per_epoch)): multiplier for m in milestones}
    return optax.piecewise_constant_schedule(base_lr, bounds)


@SCHEDULES.register("cosine")
def cosine(base_lr: float, steps_per_epoch: int, total_steps: int,
           final_lr: float = 0.0) -> optax.Schedule:
    """Cosine annealing from base_lr to final_lr over the run (CosineAnnealingLR, η_min)."""
    alpha = final_lr / base_lr if base_lr else 0.0
    return optax.cosine_decay_schedule(base_lr, max(total_steps, 1), alpha)


def build_schedule(cfg: Any, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """The lr schedule of ``cfg`` (an optim config), with linear warm-up if requested."""
    base = SCHEDULES.lookup(cfg.get("schedule", "constant"))(
        cfg.lr, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    warmup = int(round(cfg.get("warmup_epochs", 0) * steps_per_epoch))
    if warmup <= 0:
        return base
    ramp = optax.linear_schedule(0.0, cfg.lr, warmup)
    return optax.join_schedules([ramp, lambda s: base(s)], [warmup])


# ----------------------------------------------------------------------------- optimizers
# An optimizer factory: (learning_rate schedule, cfg) -> optax.GradientTransformation.


@OPTIMIZERS.register("sgd")
def sgd(learning_rate: optax.Schedule, cfg: Any) -> optax.GradientTransformation:
    momentum = cfg.get("momentum", 0.0)
    nesterov = cfg.get("nesterov", False) or cfg.get("name") == "nesterov"
    return optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov)


@OPTIMIZERS.register("adam")
def adam(learning_rate: optax.Schedule, cfg: Any) -> optax.GradientTransformation:
    return optax.adam(learning_rate, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                      eps=cfg.get("eps", 1e-8))


@OPTIMIZERS.register("adamw")
def adamw(learning_rate: optax.Schedule, cfg: Any) -> optax.GradientTransformation:
    """Decoupled decay: use ``decoupled_weight_decay`` (the L2 ``weight_decay`` is separate)."""
    return optax.adamw(learning_rate, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                       eps=cfg.get("eps", 1e-8),
                       weight_decay=cfg.get("decoupled_weight_decay", 0.0))


@OPTIMIZERS.register("radam")
def radam(learning_rate: optax.Schedule, cfg: Any) -> optax.GradientTransformation:
    return optax.radam(learning_rate, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                       eps=cfg.get("eps", 1e-8))


def build(cfg: Any, steps_per_epoch: int, total_steps: int
          ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``(tx, lr_schedule)`` from an optim config section."""
    schedule = build_schedule(cfg, steps_per_epoch, total_steps)
    parts: list[optax.GradientTransformation] = []
    if cfg.get("clip_value", 0.0) > 0:
        parts.append(optax.clip(cfg.clip_value))
    if cfg.get("clip_norm", 0.0) > 0:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    wd = cfg.get("weight_decay", 0.0)
    group = cfg.get("lr_mult_regex", "")
    if wd > 0:
        wd_mask = cfg.get("wd_mask", ".*")
        if group and cfg.get("wd_mult", 1.0) != 1.0:
            in_wd, in_group = path_mask(wd_mask), path_mask(group)
            rest = lambda p: jax.tree.map(lambda a, b: a and not b, in_wd(p), in_group(p))
            both = lambda p: jax.tree.map(lambda a, b: a and b, in_wd(p), in_group(p))
            parts.append(optax.add_decayed_weights(wd, mask=rest))
            if cfg.wd_mult > 0:
                parts.append(optax.add_decayed_weights(wd * cfg.wd_mult, mask=both))
        else:
            parts.append(optax.add_decayed_weights(wd, mask=path_mask(wd_mask)))
    parts.append(OPTIMIZERS.get(cfg.get("name", "sgd"))(schedule, cfg))
    if group and cfg.get("lr_mult", 1.0) != 1.0:
        parts.append(optax.masked(optax.scale(cfg.lr_mult), path_mask(group)))
    return optax.chain(*parts), schedule


OPTIMIZERS.alias({"momentum": "sgd", "nesterov": "sgd"})
