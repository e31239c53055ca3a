"""Every config key a run reads: its default, its domain and what it means, declared once.

``configs/default.py`` builds its base config from :data:`FIELDS`, and :mod:`gnj.validate` checks
a resolved config against the same table, so a default and its domain cannot drift apart.
Keyword arguments inside registry specs (``"batch(momentum=0.1)"``) are checked against the
entry's signature and, by keyword name, against :data:`KEYWORD_DOMAINS`; the ``model`` section
is checked against the model's own fields (its annotations, plus :data:`MODEL_FIELD_DOMAINS`).
See ``docs/reliability.md``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, ClassVar

import ml_collections

# ----------------------------------------------------------------------------- domains


@dataclasses.dataclass(frozen=True)
class Domain:
    """A set of valid values: ``reason(value)`` is None when valid, else why not."""

    def reason(self, value: Any) -> str | None:
        raise NotImplementedError

    def describe(self) -> str:
        """What would be valid, for the error line."""
        raise NotImplementedError

    def invalid_examples(self) -> list[Any]:
        """Values outside the domain (the fuzz test's generated cases)."""
        return []


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class Real(Domain):
    """A finite real number in ``[lo, hi]`` (``lo_open`` / ``hi_open``: strict bounds)."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def reason(self, value):
        if not _is_real(value):
            return f"not a number ({type(value).__name__})"
        if not math.isfinite(value):
            return "not a finite number"
        if value < self.lo or (self.lo_open and value == self.lo):
            return "below the valid range"
        if value > self.hi or (self.hi_open and value == self.hi):
            return "above the valid range"
        return None

    def describe(self):
        if self.lo == -math.inf and self.hi == math.inf:
            return "a finite number"
        if self.hi == math.inf:
            return f"a finite number {'>' if self.lo_open else '≥'} {self.lo:g}"
        if self.lo == -math.inf:
            return f"a finite number {'<' if self.hi_open else '≤'} {self.hi:g}"
        return (f"a number in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}"
                f"{')' if self.hi_open else ']'}")

    def invalid_examples(self):
        out: list[Any] = [math.nan, math.inf, "abc", True]
        if self.lo > -math.inf:
            out += [self.lo - 1.0] + ([self.lo] if self.lo_open else [])
        if self.hi < math.inf:
            out += [self.hi + 1.0] + ([self.hi] if self.hi_open else [])
        return out


@dataclasses.dataclass(frozen=True)
class Int(Domain):
    """An integer in ``[lo, hi]`` (not a bool, not a float)."""

    lo: int | None = None
    hi: int | None = None

    def reason(self, value):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"not an integer ({type(value).__name__})"
        if self.lo is not None and value < self.lo:
            return "below the valid range"
        if self.hi is not None and value > self.hi:
            return "above the valid range"
        return None

    def describe(self):
        if self.lo is not None and self.hi is not None:
            return f"an integer in [{self.lo}, {self.hi}]"
        if self.lo is not None:
            return f"an integer ≥ {self.lo}"
        return "an integer"

    def invalid_examples(self):
        out: list[Any] = [1.5, "x", None]
        if self.lo is not None:
            out += [self.lo - 1, self.lo - 7]
        if self.hi is not None:
            out += [self.hi + 1]
        return out


@dataclasses.dataclass(frozen=True)
class OfType(Domain):
    """Any value of one Python type (subclasses set the class attributes)."""

    KIND: ClassVar[type] = object
    NAME: ClassVar[str] = "value"
    DESCRIPTION: ClassVar[str] = "any value"
    INVALID: ClassVar[tuple[Any, ...]] = ()

    def reason(self, value):
        if isinstance(value, self.KIND):
            return None
        return f"not a {self.NAME} ({type(value).__name__})"

    def describe(self):
        return self.DESCRIPTION

    def invalid_examples(self):
        return list(self.INVALID)


@dataclasses.dataclass(frozen=True)
class Bool(OfType):
    KIND, NAME, DESCRIPTION, INVALID = bool, "bool", "True or False", (2, "yes", None)


@dataclasses.dataclass(frozen=True)
class Choice(Domain):
    choices: tuple[str, ...]

    def reason(self, value):
        return None if value in self.choices else "not one of the choices"

    def describe(self):
        return "one of " + ", ".join(repr(c) for c in self.choices)

    def invalid_examples(self):
        return ["nope", 3, None]


@dataclasses.dataclass(frozen=True)
class Text(OfType):
    """Any string (a path, a name, a free label)."""

    KIND, NAME, DESCRIPTION, INVALID = str, "string", "a string", (3, None)


@dataclasses.dataclass(frozen=True)
class ExistingPath(Domain):
    """A string naming an existing file or directory; ``""`` means unset."""

    def reason(self, value):
        import os

        if not isinstance(value, str):
            return f"not a string ({type(value).__name__})"
        if value and not os.path.exists(os.path.expanduser(value)):
            return "no such file or directory"
        return None

    def describe(self):
        return "an existing path, or '' for none"

    def invalid_examples(self):
        return ["/nonexistent/gnj/path", 1]


@dataclasses.dataclass(frozen=True)
class Regex(Domain):
    """A Python regular expression (``re.search`` on parameter paths); ``""`` matches none."""

    def reason(self, value):
        if not isinstance(value, str):
            return f"not a string ({type(value).__name__})"
        try:
            re.compile(value)
        except re.error as e:
            return f"not a regular expression ({e})"
        return None

    def describe(self):
        return "a Python regular expression"

    def invalid_examples(self):
        return ["(unclosed", "*x", 5]


@dataclasses.dataclass(frozen=True)
class Spec(Domain):
    """A registry spec ``name(k=v, ...)`` of ``registry`` (an attribute of gnj.registry);
    ``with_args=False``: a bare name only. The keywords are checked by :mod:`gnj.validate`."""

    registry: str
    with_args: bool = True

    def reason(self, value):
        return None if isinstance(value, str) else f"not a string ({type(value).__name__})"

    def describe(self):
        return f"a {self.registry.lower()[:-1]} spec"

    def invalid_examples(self):
        return ["no_such_entry", "x(", "name(1)", "__import__('os')", 7, ""]


@dataclasses.dataclass(frozen=True)
class Reals(Domain):
    """A tuple/list of numbers each in ``item`` (``increasing``: strictly increasing)."""

    item: Real = Real()
    increasing: bool = False

    def reason(self, value):
        if not isinstance(value, (tuple, list)):
            return f"not a tuple ({type(value).__name__})"
        for x in value:
            why = self.item.reason(x)
            if why:
                return f"element {x!r}: {why}"
        if self.increasing and any(b <= a for a, b in zip(value, value[1:])):
            return "not strictly increasing"
        return None

    def describe(self):
        return (f"a tuple, each element {self.item.describe()}"
                + ", strictly increasing" * self.increasing)

    def invalid_examples(self):
        out: list[Any] = [(math.nan,), "1,2"]
        if self.increasing:
            out.append((3, 1))
        return out


@dataclasses.dataclass(frozen=True)
class Field:
    default: Any
    domain: Domain
    doc: str = ""


# ----------------------------------------------------------------------------- the table

_COUNT = Int(lo=1)
_NONNEG = Real(lo=0.0)
_EVERY = Int(lo=0)  # 0: off

MODEL_FIELD_DOMAINS: dict[str, Domain] = {
    # by model field name, for every model that has the field (types come from annotations)
    "depth": _COUNT, "width": Real(0.0, lo_open=True), "num_classes": _COUNT,
    "widen_factor": _COUNT, "growth": _COUNT, "num_cells": _COUNT, "cell_depth": _COUNT,
    "width_mult": Real(0.0, lo_open=True), "wm": Real(0.0, lo_open=True),
    "dropout": Real(0.0, 1.0, hi_open=True), "droprate": Real(0.0, 1.0, hi_open=True),
    "reduction": Real(0.0, 1.0, lo_open=True), "noise_scale": _NONNEG, "fc_noise": _NONNEG,
    "head_std": _NONNEG, "gain": Real(0.0, lo_open=True), "fixup_m": Real(0.0, lo_open=True),
    "topology_seed": Int(lo=0),
}

MODEL_BUILD_KEYS: tuple[str, ...] = ("dtype", "param_dtype")  # the precision policy
"""``model`` keys that ``models.build`` consumes itself rather than passing to the model (each
has its ``FIELDS`` entry); every other ``model`` key must be a field of the named model."""

MODEL_SPEC_FIELDS: dict[str, str] = {
    # model fields that hold registry specs, by name (suffix match for the *_init fields)
    "norm": "NORMS", "act": "ACTIVATIONS", "conv": "CONVS", "_init": "INITS",
}

FIELDS: dict[str, Field] = {
    "seed": Field(0, Int(lo=0, hi=2**32 - 1), "PRNG seed of init, data order and augmentation"),
    "dataset.name": Field("digits", Spec("DATASETS"), "gnj.registry.DATASETS"),
    "dataset.data_dir": Field("", Text(), "TFDS data dir ('' = $TFDS_DATA_DIR)"),
    "dataset.num_seg": Field(2, _COUNT, "label segments of the generated sets whose labels "
                             "come from a generation index (DatasetSpec.relabel)"),
    "dataset.mean": Field((), Reals(), "per-channel normalisation mean (() = the dataset's)"),
    "dataset.std": Field((), Reals(Real(0.0, lo_open=True)),
                         "per-channel normalisation std (() = the dataset's)"),
    "dataset.image_size": Field(0, Int(lo=0), "streamed sets: training crop side (0 = 224)"),
    "dataset.eval_resize": Field(0, Int(lo=0), "streamed sets: eval resize before the centre "
                                 "crop (0 = 256)"),
    "dataset.shuffle_buffer": Field(0, Int(lo=0), "streamed sets: shuffle buffer (0 = 16384)"),
    "dataset.num_train_examples": Field(0, Int(lo=0), "streamed sets: training size when TFDS "
                                        "has no split metadata (0 = from TFDS)"),
    "dataset.num_eval_examples": Field(0, Int(lo=0), "streamed sets: eval size (0 = from TFDS)"),
    "dataset.augment.crop_padding": Field(0, Int(lo=0), "random crop after this much padding"),
    "dataset.augment.pad_mode": Field(
        "constant", Choice(("constant", "reflect")), 'padding of the random crop (jnp.pad mode)'),
    "dataset.augment.flip": Field(False, Bool(), "random horizontal flip"),
    "model.name": Field("resnet_cifar", Spec("MODELS", with_args=False),
                        "gnj.registry.MODELS; the other model keys are the model's fields"),
    # the model's other keys are checked against the named model's fields (their annotated
    # types), MODEL_FIELD_DOMAINS and MODEL_SPEC_FIELDS; these are the default model's
    "model.depth": Field(
        8, MODEL_FIELD_DOMAINS["depth"], "network depth (the model's own meaning)"),
    "model.width": Field(
        16, MODEL_FIELD_DOMAINS["width"], 'base width (channels of the first stage)'),
    "model.shortcut": Field("A", Text(), "residual shortcut: A zero-pad, B 1×1 conv, C 3×3 conv"),
    "model.norm": Field("batch", Spec(MODEL_SPEC_FIELDS["norm"]), "norm spec (gnj.registry.NORMS)"),
    "model.act": Field(
        "relu", Spec(MODEL_SPEC_FIELDS["act"]), 'activation spec (gnj.registry.ACTIVATIONS)'),
    "model.dtype": Field("float32", Choice(("float32", "bfloat16", "float16", "float64")),
                         "compute dtype (bfloat16: mixed precision; gnj/precision.py)"),
    "model.param_dtype": Field("float32", Choice(("float32", "bfloat16", "float16", "float64")),
                               "params, optimizer state and norm statistics"),
    "optim.name": Field(
        "sgd", Spec("OPTIMIZERS", with_args=False), 'optimizer (gnj.registry.OPTIMIZERS)'),
    "optim.lr": Field(0.1, _NONNEG, "base learning rate"),
    "optim.momentum": Field(0.9, Real(0.0, 1.0, hi_open=True), "SGD momentum"),
    "optim.nesterov": Field(False, Bool(), "Nesterov momentum"),
    "optim.b1": Field(0.9, Real(0.0, 1.0, hi_open=True), "Adam-family first-moment decay"),
    "optim.b2": Field(0.999, Real(0.0, 1.0, hi_open=True), "Adam-family second-moment decay"),
    "optim.eps": Field(1e-8, Real(0.0, lo_open=True), "Adam-family denominator epsilon"),
    "optim.decoupled_weight_decay": Field(0.0, _NONNEG, "adamw's decoupled decay"),
    "optim.schedule": Field("cosine", Spec("SCHEDULES"), "lr schedule (gnj/optim.py)"),
    "optim.warmup_epochs": Field(0.0, _NONNEG, "linear warm-up from 0 (epochs)"),
    "optim.weight_decay": Field(5e-4, _NONNEG, "L2 added to the gradient"),
    "optim.wd_mask": Field(".*", Regex(), "params whose path matches are decayed"),
    "optim.lr_mult_regex": Field("", Regex(), "params whose path matches get lr_mult/wd_mult"),
    "optim.lr_mult": Field(
        1.0, _NONNEG, 'learning-rate multiplier of the params matching lr_mult_regex'),
    "optim.wd_mult": Field(
        1.0, _NONNEG, 'weight-decay multiplier of the params matching lr_mult_regex'),
    "optim.clip_value": Field(0.0, _NONNEG, "clip gradients by value (0: off)"),
    "optim.clip_norm": Field(0.0, _NONNEG, "clip gradients by global norm (0: off)"),
    "batch_size": Field(128, _COUNT, "global training batch"),
    "eval_batch_size": Field(200, _COUNT, "global batch size of evaluation"),
    "num_epochs": Field(40.0, _NONNEG, "run length in epochs, unless num_steps > 0"),
    "num_steps": Field(0, Int(lo=0), "> 0: run length in steps (overrides num_epochs)"),
    "mixup_alpha": Field(0.0, _NONNEG, "Beta(α, α) mixup (0: off)"),
    "log_every_steps": Field(20, _COUNT, "a metrics record at every multiple of this step"),
    "eval_every_steps": Field(100, _COUNT, "evaluation at every multiple of this step"),
    "checkpoint_every_steps": Field(100, _COUNT, "a checkpoint at every multiple of this step"),
    "keep_checkpoints": Field(3, _COUNT, "how many of the newest checkpoints are kept"),
    "async_checkpointing": Field(True, Bool(), "write checkpoints in the background"),
    "on_nonfinite": Field("stop", Choice(("stop", "skip")),
                          "a non-finite loss or gradient norm: stop (exit 3) or skip the update"),
    "restore_from": Field("", ExistingPath(),
                          "init params/state from another run's checkpoint (not a resume)"),
    "pretrained": Field("", ExistingPath(), "a torchvision-format .pth file loaded after init"),
    "quiet": Field(False, Bool(), "no per-step console lines"),
    "analysis.probe_every_steps": Field(0, _EVERY, "> 0: per-layer probes (analysis/probes.py)"),
    "analysis.probe_max_examples": Field(
        0, Int(lo=0), 'examples a probe uses (0: the whole batch)'),
    "analysis.correlations_every_steps": Field(
        0, _EVERY, "> 0: weight correlations (analysis/correlations.py)"),
    "analysis.correlations_max_rows": Field(
        5000, _COUNT, 'rows sampled per kernel for weight correlations'),
    "analysis.cross_correlation_layers": Field(
        "", Text(), '"all" or "a/conv,b/conv": corr/cross/<a>~<b> in the correlations hook'),
    "analysis.cross_correlation_forward": Field(
        True, Bool(), 'cross-correlate in the forward layer order'),
    "analysis.num_samples": Field(8, _COUNT, "inputs the analysis takes Jacobians at"),
    "analysis.num_probes": Field(16, _COUNT, "Hutchinson probes of the block moments"),
    "analysis.seed": Field(0, Int(lo=0), "PRNG seed of the analysis's random probes"),
    "analysis.exact_max_bytes": Field(
        64 * 2**20, Int(lo=0), 'largest exact Jacobian batch; above it, matrix-free estimates'),
    "analysis.lanczos_steps": Field(20, _COUNT, "Lanczos steps of the spectrum quadrature"),
    "analysis.spectrum_probes": Field(4, _COUNT, "random probes of the spectrum quadrature"),
    "analysis.block_spectra": Field(False, Bool(), "also the spectrum of every block"),
    "analysis.hooks": Field("", Text(), "comma-separated analyze hooks to run (empty: all)"),
    "analysis.elu_derivative": Field(
        "correct", Choice(("correct", "reference")),
        "ELU derivative in LDI: correct, or a reference's exp(x) for x > 0 and 0 otherwise"),
}

RUN_CONTROLS = ("num_steps", "num_epochs", "log_every_steps", "eval_every_steps",
                "checkpoint_every_steps", "keep_checkpoints", "async_checkpointing", "quiet",
                "on_nonfinite", "dataset.data_dir", "analysis.")
"""Keys a resumed run may change freely (prefixes ending in '.' cover a section): how long and
how often, not what is trained. Any other difference from the recorded config is refused."""

_MOMENTUM = Real(0.0, 1.0)
KEYWORD_DOMAINS: dict[str, Domain] = {
    # registry-spec keywords, by name, for every entry that takes them
    "momentum": _MOMENTUM, "epsilon": Real(0.0, lo_open=True), "eps": Real(0.0, lo_open=True),
    "groups": _COUNT, "p": Real(0.0, lo_open=True), "gain": Real(0.0, lo_open=True),
    "decay_forward": Real(0.0, 1.0), "decay_backward": Real(0.0, 1.0),
    "milestones": Reals(_NONNEG, increasing=True), "multiplier": Real(0.0, lo_open=True),
    "final_lr": _NONNEG, "split": Real(0.0, 1.0, lo_open=True), "final_ratio": _NONNEG,
    "drops": Reals(_NONNEG), "factor": Real(0.0, lo_open=True), "alpha": Real(0.0, lo_open=True),
    "num_layers": _COUNT, "num_blocks": _COUNT, "m": _COUNT, "sigma_w": Real(0.0, lo_open=True),
    "negative_slope": Real(), "init_slope": Real(), "scale_init": Real(),
    "mode": Choice(("fan_in", "fan_out", "fan_avg")),
}


def domain_of(path: str) -> Domain | None:
    """The declared domain of config key ``path`` (dotted), or None if it has none."""
    return FIELDS[path].domain if path in FIELDS else None


def base_config() -> ml_collections.ConfigDict:
    """A ConfigDict holding every default of :data:`FIELDS` (nested by the dotted paths)."""
    root: dict[str, Any] = {}
    for path, spec in FIELDS.items():
        *parents, leaf = path.split(".")
        node = root
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = spec.default
    return _to_config(root)


def _to_config(tree: dict[str, Any]) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {k: _to_config(v) if isinstance(v, dict) else v for k, v in tree.items()})


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optim.lr": 0.1, ...}``: the leaves of a (nested) config by dotted path."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, (ml_collections.ConfigDict, dict)):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def is_run_control(path: str) -> bool:
    return any(path == c or (c.endswith(".") and path.startswith(c)) for c in RUN_CONTROLS)


def keys_table() -> str:
    """Every declared key as a Markdown table (key, default, valid values, meaning): the
    "every key" section of docs/configs.md, which a test keeps equal to this."""
    rows = ["| key | default | valid | meaning |", "|---|---|---|---|"]
    for key, f in FIELDS.items():
        doc = f.doc.replace("|", "\\|")
        rows.append(f"| `{key}` | `{f.default!r}` | {f.domain.describe()} | {doc} |")
    return "\n".join(rows) + "\n"
