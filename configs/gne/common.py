"""Helpers shared by every experiment family's config (argument parsing, runlocal, constants).

An experiment config's argument is ``<variant>[,<option>...]``: the variant names one run of
the reference (``VARIANTS`` of the family file), the options tweak it (``runlocal``, ``b64``,
``e100``, ...). ``runlocal`` shrinks any variant to a few seconds on a CPU: scikit-learn's 8×8
digits (built offline), the model's own ``tiny`` sizes, batch 32, 4 steps; everything else (norm,
init, activation, optimizer recipe, mixup, warm-up) stays as in the variant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import ml_collections

from configs.default import base_config

# Per-channel normalisation constants of the references (the first three are also the defaults
# of the gnj dataset specs for cifar10 / cifar100).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD_GNE = (0.2023, 0.1994, 0.2010)  # GNEDNN and NN-Mass (REFERENCE.md §1.10, §4.7)
CIFAR100_MEAN_NN_MASS = (0.5071, 0.4866, 0.4409)
CIFAR100_STD_NN_MASS = (0.2009, 0.1984, 0.2023)
HALF = (0.5, 0.5, 0.5)  # Beyond BatchNorm (§2.6)
CIFAR_MEAN_CONSTNET = tuple(v / 255 for v in (125.3, 123.0, 113.9))  # BeyondSigProp (§3.5)
CIFAR_STD_CONSTNET = tuple(v / 255 for v in (63.0, 62.1, 66.7))
IMAGENET32_MEAN_CONSTNET = tuple(v / 255 for v in (123.3, 118.1, 108.0))
IMAGENET32_STD_CONSTNET = tuple(v / 255 for v in (54.1, 52.6, 53.2))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def new_config() -> ml_collections.ConfigDict:
    """``base_config()`` plus the keys every experiment family sets.

    ``dataset.mean`` / ``dataset.std``: normalisation constants of the reference (empty = the
    dataset's own); ``pretrained``: a torchvision ``.pth`` loaded after init (gnj.pretrained).
    """
    c = base_config()
    c.dataset.mean = ()
    c.dataset.std = ()
    c.pretrained = ""
    return c


def split_arg(arg: str | None, default: str, n_variant: int = 1) -> tuple[str, list[str]]:
    """``"a,b,opt1,opt2"`` → ``("a,b", ["opt1", "opt2"])`` for an ``n_variant``-token variant."""
    parts = [p.strip() for p in (arg or default).split(",") if p.strip()]
    return ",".join(parts[:n_variant]), parts[n_variant:]


def unknown_variant(family: str, variant: str, valid: Iterable[str], options: str = ""
                    ) -> ValueError:
    msg = f"{family}: no variant {variant!r}; valid: {', '.join(valid)}"
    if options:
        msg += f" (options after a comma: {options})"
    return ValueError(msg)


def unknown_option(family: str, option: str, arg: str | None, valid: str) -> ValueError:
    return ValueError(f"{family}: unknown option {option!r} in {arg!r}; valid options: {valid}")


def set_eval_cadence(c: ml_collections.ConfigDict, steps_per_epoch: int) -> None:
    """Log every 100 steps, evaluate and checkpoint once per epoch (the references' cadence)."""
    c.log_every_steps = min(100, steps_per_epoch)
    c.eval_every_steps = steps_per_epoch
    c.checkpoint_every_steps = steps_per_epoch


def runlocal(c: ml_collections.ConfigDict, model_sizes: dict | None = None) -> None:
    """Shrink ``c`` in place to seconds on a CPU (digits, tiny model, 4 steps).

    Models whose ``tiny`` input is 32×32 or larger (MobileNet v1, the CIFAR DenseNet) get
    ``digits_32x32``, the digits upsampled ×4 (registered by ``gnj.data.imagenet``).
    """
    tiny = _tiny(c.model.name)
    big_input = min(tuple(tiny.get("input_shape", (8, 8)))[:2]) >= 32
    if big_input:
        import gnj.data.imagenet  # noqa: F401  (registers digits_32x32)
    c.dataset.name = "digits_32x32" if big_input else "digits"
    c.dataset.mean, c.dataset.std = (), ()
    c.dataset.augment.crop_padding = min(c.dataset.augment.crop_padding, 1)
    sizes = dict(model_sizes or {})
    if not sizes:
        sizes = {k: v for k, v in tiny.items() if k != "input_shape"}
    with c.model.ignore_type():  # e.g. vgg's cfg name → an explicit tiny tuple
        for k, v in sizes.items():
            c.model[k] = v
    c.batch_size, c.eval_batch_size = 32, 200
    c.num_steps = 4
    c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 2, 4, 4
    c.pretrained = ""


def _tiny(model_name: str) -> dict:
    """The model's own ``tiny`` sizes (a class attribute of every gnj model), if registered."""
    from gnj.registry import MODELS

    if model_name not in MODELS:
        return {}
    return dict(getattr(MODELS.get(model_name), "tiny", {}) or {})


def apply_model(c: ml_collections.ConfigDict, name: str, **fields) -> None:
    """Replace the ``model`` section by ``{name, **fields}`` (base_config's keys are dropped,
    but for the precision keys ``dtype`` / ``param_dtype``)."""
    kept = {k: c.model[k] for k in ("dtype", "param_dtype") if k in c.model}
    c.model = ml_collections.ConfigDict(dict(name=name, **{**kept, **fields}))


def int_option(option: str, prefix: str) -> int | None:
    """``int_option("b64", "b") == 64``; None if ``option`` is not ``prefix<digits>``."""
    rest = option[len(prefix):]
    if option.startswith(prefix) and rest.isdigit():
        return int(rest)
    return None


def float_option(option: str, prefix: str) -> float | None:
    """``float_option("lr0.5", "lr") == 0.5``; None if ``option`` is not ``prefix<number>``."""
    if not option.startswith(prefix):
        return None
    try:
        return float(option[len(prefix):])
    except ValueError:
        return None


def names(*groups: Sequence[str]) -> list[str]:
    """Concatenate variant-name lists, refusing duplicates."""
    out: list[str] = []
    for g in groups:
        for n in g:
            if n in out:
                raise ValueError(f"duplicate variant name {n!r}")
            out.append(n)
    return out
