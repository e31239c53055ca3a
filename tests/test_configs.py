"""Every experiment family's config: every variant builds and names registered entries, bad
arguments name the valid ones (the typed parser, gnj/config_args.py), the README's commands
build, weight-decay masks select the recipe's parameters, and each family's ``runlocal`` variant
trains a few steps through ``gnj.train.train_and_evaluate``. Each paper's recipe checks live in
tests/proj/<paper>/test_configs.py."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re

import jax
import jax.numpy as jnp
import pytest

from gnj import optim, precision
from gnj.registry import ACTIVATIONS, CONVS, INITS, MODELS, NORMS

FAMILIES = ["configs.gne.cifar", "configs.gne.imagenet", "configs.beyond_bn.cifar",
            "configs.constnet.wrn", "configs.nn_mass.mlp", "configs.nn_mass.cifar",
            "configs.nn_mass.imagenet", "configs.online_norm.resnet",
            "configs.online_norm.imagenet"]
SPEC_FIELDS = {"norm": NORMS, "act": ACTIVATIONS, "conv": CONVS, "weight_init": INITS,
               "stem_init": INITS, "shortcut_init": INITS, "head_init": INITS}


def _family(name):
    return importlib.import_module(name)


def _all_args(mod) -> list[str]:
    args = list(mod.VARIANTS)
    for seg in getattr(mod, "SEGMENTS", {}).values():
        args += [a for a in seg if a not in args]
    return args


def _check_spec(field: str, spec: str) -> None:
    """The spec names a registered entry and its arguments are accepted by the factory."""
    reg = SPEC_FIELDS[field]
    factory = reg.lookup(spec)
    if reg is NORMS:
        factory()
    elif reg is CONVS:
        factory(features=4, kernel_size=(3, 3))
    else:
        factory()


@pytest.mark.parametrize("family", FAMILIES)
def test_every_variant_builds_and_names_registered_entries(family):
    mod = _family(family)
    assert mod.VARIANTS and len(set(mod.VARIANTS)) == len(mod.VARIANTS)
    missing_models = set()
    for arg in _all_args(mod):
        for suffix in ("", ",runlocal"):
            c = mod.get_config(arg + suffix)
            json.loads(c.to_json_best_effort())  # serialisable into the workdir's config.json
            assert c.model.name, arg
            for field in SPEC_FIELDS:
                if field in c.model and c.model[field] is not None:
                    _check_spec(field, c.model[field])
            for pattern in (c.optim.wd_mask, c.optim.lr_mult_regex):
                re.compile(pattern)
            if c.model.name not in MODELS:
                missing_models.add(c.model.name)
                continue
            fields = getattr(MODELS.get(c.model.name), "__dataclass_fields__", {})
            unknown = set(c.model) - set(fields) - {"name", *precision.KEYS}
            assert not unknown, f"{family}:{arg}{suffix}: model {c.model.name} has no {unknown}"
            if suffix:
                assert c.num_steps > 0 and c.dataset.name.startswith("digits")
    if missing_models:
        pytest.skip(f"models not registered yet: {sorted(missing_models)} (everything else of "
                    f"{family} checked)")


@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_variant_and_option_raise_listing_valid_ones(family):
    mod = _family(family)
    with pytest.raises(ValueError, match=re.escape(mod.VARIANTS[0])):
        mod.get_config("no_such_variant,also_not")
    with pytest.raises(ValueError, match="option"):
        mod.get_config(mod.VARIANTS[0] + ",no_such_option")


def _paths(tree) -> list[str]:
    return [optim.path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _decayed(config, params) -> set[str]:
    mask = optim.path_mask(config.optim.wd_mask)(params)
    return {optim.path_str(p) for p, v in jax.tree_util.tree_flatten_with_path(mask)[0] if v}


def _init_params(config, shape=(1, 8, 8, 3)):
    from gnj import models

    model = models.build(config.model, 10)
    return model.init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False)["params"]


def test_gne_weight_decay_mask_selects_conv_and_linear_params_only():
    from configs.gne import cifar

    c = cifar.get_config("bn_prelu,runlocal")
    params = _init_params(c)
    paths, decayed = _paths(params), _decayed(c, params)
    convs = {p for p in paths if re.search(r"(conv\d|stem|head)/(kernel|bias)$", p)}
    assert convs and decayed == convs  # no norm parameter, no PReLU slope
    assert all(("norm" in p) or ("kernel" not in p and "bias" not in p) or p in decayed
               for p in paths)


def test_online_norm_imagenet_mask_exempts_non_fc_biases_only():
    from configs.online_norm import imagenet

    c = imagenet.get_config("resnet18,batch,runlocal")
    params = _init_params(c, (1, 8, 8, 3))
    paths, decayed = _paths(params), _decayed(c, params)
    assert "fc/bias" in decayed and "bn1/scale" in decayed and "bn1/bias" not in decayed
    assert set(paths) - decayed == {p for p in paths if p.endswith("/bias") and
                                    not p.startswith("fc/")}


def test_gne_smn_resnet50_mask_skips_the_downsample_conv():
    from configs.gne import imagenet

    c = imagenet.get_config("resnet50_smn_mixup_0.2,runlocal")
    params = _init_params(c, (1, 8, 8, 3))
    decayed = _decayed(c, params)
    assert any("downsample_conv" in p for p in _paths(params))
    assert not any("downsample" in p or "bn" in p for p in decayed)
    assert "layer1_0/conv1/kernel" in decayed and "fc/kernel" in decayed
    c2 = imagenet.get_config("resnet50_smn_mixup_0.2,wd_downsample,runlocal")
    assert any("downsample_conv" in p for p in _decayed(c2, params))


# ---------------------------------------------------------------------------- runlocal training

RUNLOCAL = [
    ("configs.gne.cifar", "orth_sprelu"),
    ("configs.nn_mass.mlp", "readme"),
    *[pytest.param(f, v, marks=pytest.mark.slow) for f, v in (
        ("configs.gne.cifar", "res_fixup2s_mixup"),
        ("configs.gne.cifar", "l2norm"),
        ("configs.gne.cifar", "dn_orth_seluv2_g2_e3"),
        ("configs.gne.imagenet", "mobilenet_seluv2_0.03"),
        ("configs.gne.imagenet", "resnet50_fixup_ours"),
        ("configs.beyond_bn.cifar", "resnet56_preact_skipinit,group,p0.5,warmup"),
        ("configs.beyond_bn.cifar", "vgg10,evonorm_b0"),
        ("configs.constnet.wrn", "leakynet_1_ii11_ii11_ii11"),
        ("configs.constnet.wrn", "constnet"),
        ("configs.nn_mass.cifar", "readme"),
        ("configs.nn_mass.imagenet", "mobilenet_v2"),
        ("configs.online_norm.resnet", "cifar10,online"),
        ("configs.online_norm.imagenet", "resnet50,layer"),
    )],
]


@pytest.mark.parametrize("family,variant", RUNLOCAL)
def test_runlocal_variant_trains(family, variant, tfds_dir, tmp_path):
    from gnj import train
    from gnj.metrics import read_jsonl

    c = _family(family).get_config(variant + ",runlocal")
    if c.model.name not in MODELS:
        pytest.skip(f"model {c.model.name!r} is not registered yet")
    c.dataset.data_dir = tfds_dir
    c.quiet = True
    c.async_checkpointing = False
    result = train.train_and_evaluate(c, str(tmp_path / "run"))
    records = read_jsonl(str(tmp_path / "run" / "metrics.jsonl"))
    assert [r["step"] for r in records] == list(range(c.log_every_steps, c.num_steps + 1,
                                                      c.log_every_steps))
    assert all(math.isfinite(r["train/loss"]) for r in records)
    assert 0.0 <= result["eval/accuracy"] <= 1.0 and math.isfinite(result["eval/loss"])


def test_runlocal_keeps_the_recipe_but_shrinks_the_run():
    from configs.gne import cifar

    full, local = cifar.get_config("res_l2norm_mixup"), cifar.get_config("res_l2norm_mixup,"
                                                                         "runlocal")
    for key in ("norm", "conv", "act", "shortcut"):
        assert full.model[key] == local.model[key]
    assert local.mixup_alpha == full.mixup_alpha == 1.0
    assert local.optim.to_dict() == full.optim.to_dict()
    assert local.num_steps == 4 and local.model.depth < full.model.depth


def test_model_sizes_from_the_models_tiny_attribute():
    from configs.common import runlocal
    from configs.nn_mass import imagenet

    c = imagenet.get_config("resnet101")
    runlocal(c)
    tiny = MODELS.get("resnet101").tiny
    assert c.model.arch == tiny["arch"] and c.model.cifar_stem == tiny["cifar_stem"]
    assert dataclasses.is_dataclass(MODELS.get("resnet101"))


# ------------------------------------------------------------------ the typed argument parser


def test_config_args_parses_typed_options_and_names_bad_tokens():
    from gnj.config_args import Family, Ints, Option

    fam = Family("configs/x.py", variants=["a", "b"], default="a",
                 options=[Option("runlocal"), Option("batch", int, token="b", default=128),
                          Option("lr", float), Option("warmup", off="nowarmup"),
                          Option("tc", Ints), Option("probe"),
                          Option("p", float, only=lambda a: a.variant == "b", needs="variant b")])
    args = fam.parse("b,b64,lr=0.5,nowarmup,tc1_2_3,p0.5,probe")
    assert (args.variant, args.batch, args.lr, args.warmup, args.tc, args.p, args.probe) == (
        "b", 64, 0.5, False, (1, 2, 3), 0.5, True)
    assert args.given == {"batch", "lr", "warmup", "tc", "p", "probe"}
    default = fam.parse("")
    assert default.variant == "a" and default.batch == 128 and default.warmup is None
    assert fam.parse("runlocal").variant == "a" and fam.parse("batch=32,runlocal").batch == 32
    with pytest.raises(ValueError, match=r"configs/x.py: no variant 'c'; valid: a, b"):
        fam.parse("c")
    with pytest.raises(ValueError, match=r"configs/x.py: unknown option 'bx' .*b<batch>"):
        fam.parse("a,bx")
    with pytest.raises(ValueError, match=r"option 'lr=abc': 'abc' is not a valid float"):
        fam.parse("a,lr=abc")
    with pytest.raises(ValueError, match=r"unknown option 'p0.5' .*p needs variant b"):
        fam.parse("a,p0.5")


@pytest.mark.parametrize("family", FAMILIES + ["configs.default"])
def test_every_family_declares_runlocal_and_accepts_key_value_options(family):
    mod = _family(family)
    assert "runlocal" in {o.key for o in mod.FAMILY.options}
    assert mod.FAMILY.parse("runlocal").variant == mod.FAMILY.default  # option first: default
    assert mod.get_config(mod.VARIANTS[-1] + ",runlocal=true").to_dict() == mod.get_config(
        mod.VARIANTS[-1] + ",runlocal").to_dict()


#: Hand-picked arguments exercising every option form of every family (the README's own
#: commands are checked by tests/test_docs.py, which reads the README).
README_ARGS = {
    "configs.gne.cifar": ["orth_tanh", "dn_orth_seluv2_g2_e3", "km_relu,digits"],
    "configs.gne.imagenet": ["mobilenet_bn_dense", "mobilenet_seluv2_0.06", "resnet50_baseline",
                             "resnet50_mixup", "resnet50_smn_mixup_0.2",
                             "resnet50_l1mn_mixup_0.2", "resnet50_fixup", "resnet50_fixup_ours"],
    "configs.beyond_bn.cifar": ["resnet56,batch", "vgg20,group,p0.5", "vgg10,plain,b64",
                                "resnet56_preact_skipinit,group,p8,b64,warmup,probe,cifar10",
                                "resnet56_skipinit,layer,b128,cifar10", "vgg40,frn,warmup"],
    "configs.constnet.wrn": ["constnet", "constnet_he", "constnet_deterministic",
                             "constnet_cuda_dropout", "constnet_dropout",
                             "leakynet_1_ii11_ii11_ii11", "leakynet_h_hhhh_hhhh_hhhh"],
    "configs.nn_mass.mlp": ["readme", "ldi", "ldi,d8,w8,tc10", "mnist,d8,w8,tc10,seg2,e1",
                            "linear,d4,w8,tc20,seg2", "circle,seg4,e2"],
    "configs.nn_mass.cifar": ["dense_depth", "regular_dense", "readme"],
    "configs.nn_mass.imagenet": ["mobilenet_v2", "mobilenet_v2_w1.4,i224", "resnet18",
                                 "wide_resnet101_2"],
    "configs.online_norm.resnet": ["cifar10,online", "cifar10,batch", "cifar100,online",
                                   "cifar100,group", "cifar10,online,b32", "digits,online",
                                   "cifar10,layer,d32"],
    "configs.online_norm.imagenet": ["resnet18,online", "resnet18,batch",
                                     "resnet50,online,b32,e100", "resnext50_32x4d,group,b128"],
}


@pytest.mark.parametrize("family", sorted(README_ARGS))
def test_every_readme_command_builds(family):
    mod = _family(family)
    for arg in README_ARGS[family]:
        for suffix in ("", ",runlocal"):
            assert mod.get_config(arg + suffix).model.name, arg
