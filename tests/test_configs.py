"""Every experiment family's config: every variant builds, names registered entries, follows the
reference recipe (lr rules, schedules, weight-decay masks), and each family's ``runlocal``
variant trains a few steps through ``gnj.train.train_and_evaluate``."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
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


def test_gne_catalogue_counts_and_recipe():
    from configs.gne import cifar

    seg = cifar.SEGMENTS
    assert [len(seg[s]) for s in ("initialization", "norm", "selu", "densenet", "resnet")] == [
        25, 4, 8, 1, 8]
    c = cifar.get_config("km_seluv2_g2_e3")
    assert c.model.norm == "none" and c.optim.lr == 0.01 and c.num_epochs == 130
    gamma = float(re.search(r"gamma=([0-9.e-]+)", c.model.act).group(1))
    gain = float(re.search(r"gain=([0-9.e-]+)", c.model.weight_init).group(1))
    assert gain == 1.4142535 and gamma == pytest.approx(gain ** 2, rel=1e-12)  # γ = gain²
    assert cifar.get_config("wn32").num_epochs == 4  # [as-written]
    assert cifar.get_config("wn32,full").num_epochs == 130
    r = cifar.get_config("res_fixup1_5s_mixup")
    assert r.mixup_alpha == 1.0 and r.model.bns and "p=1.5" in r.model.weight_init
    assert r.optim.weight_decay == 1e-4 and r.optim.lr_mult == 0.1
    assert cifar.get_config("dn_bn").optim.schedule.startswith("multistep(milestones=(50, 80)")


def _lubana_lr(epoch_float, batch, init_lr, warmup, iters):
    """Beyond-BatchNorm's LR_Scheduler (REFERENCE.md §2.6), re-derived per iteration."""
    base, final = init_lr * 0.1 * 256 / batch, init_lr * 0.01 * 256 / batch
    total_epochs = 60
    warm_epochs = (1 if batch == 16 else 5) if warmup else 0
    warm = np.linspace(0.0, base, iters * warm_epochs) if warm_epochs else np.zeros(0)
    decay_iters = iters * (total_epochs - warm_epochs)
    sched = np.concatenate([warm, np.full(int(0.75 * decay_iters), base),
                            np.full(int(0.25 * decay_iters), final)])
    return sched[int(epoch_float * iters)]


@pytest.mark.parametrize("batch,warmup", [(256, False), (128, True), (64, False), (16, True),
                                          (16, False)])
def test_beyond_bn_lr_rule_matches_the_reference_scheduler(batch, warmup):
    from configs.beyond_bn import cifar

    c = cifar.get_config(f"vgg10,batch,b{batch},{'warmup' if warmup else 'nowarmup'},lr0.5")
    iters = 50_000 // batch
    sched = optim.build_schedule(c.optim, iters, int(c.num_epochs * iters))
    assert c.num_epochs == (10 if batch < 32 else 60)
    for epoch in (0.5, 3.0, 7.0, 9.5, 20.0, 44.0, 46.0, 50.0, 59.9):
        if epoch >= c.num_epochs:
            continue
        got = float(sched(int(epoch * iters)))
        want = _lubana_lr(epoch, batch, 0.5, warmup, iters)
        # warm-up ramps differ by one step of the ramp (linspace includes its endpoint)
        assert got == pytest.approx(want, rel=1e-5, abs=0.5 * 25.6 / batch / iters), epoch


def test_beyond_bn_grouping_and_norm_mapping():
    from configs.beyond_bn import cifar

    assert cifar.get_config("vgg10,group").model.norm == "group(p=32.0, unbiased=True)"
    assert "p=1e-07" in cifar.get_config("vgg10,group,p1e-07").model.norm
    frn = cifar.get_config("resnet56_preact,frn")
    assert frn.model.act == "identity" and frn.optim.warmup_epochs == 5  # FRN uses warm-up
    assert cifar.get_config("vgg10,wn").model.conv == "weight_norm"
    with pytest.raises(ValueError, match="needs norm 'group'"):
        cifar.get_config("vgg10,batch,p0.5")
    c = cifar.get_config("vgg40,batch,cifar10")
    assert c.dataset.name == "cifar10" and c.dataset.augment.crop_padding == 0
    assert c.dataset.augment.flip and c.dataset.mean == (0.5, 0.5, 0.5)


def test_online_norm_imagenet_batch_rule():
    from configs.online_norm import imagenet

    c = imagenet.get_config("resnet50,online,b32")
    m = 0.9 ** (32 / 256)
    assert c.optim.momentum == pytest.approx(m, rel=1e-12)
    assert c.optim.lr == pytest.approx(0.1 * (32 / 256) * (1 - m) / 0.1, rel=1e-12)
    assert "preset='imagenet'" in c.model.norm
    base = imagenet.get_config("resnet18,group")
    assert base.optim.lr == 0.1 and base.optim.momentum == 0.9 and "groups=32" in base.model.norm


def test_constnet_readme_set_and_leakynet_sweep():
    from configs.constnet import wrn

    assert len(wrn.SEGMENTS["readme"]) == 5 and len(wrn.SEGMENTS["leakynet"]) == 7
    det = wrn.get_config("constnet_dropout")
    assert det.model.droprate == 0.01 and det.model.noise_scale == 0.0
    assert wrn.get_config("constnet").model.noise_scale > 0
    assert wrn.get_config("constnet_he").model.varnet
    lk = wrn.get_config("leakynet_1_ii11_ii11_ii11")
    assert lk.model.lrelu == 0.01 and lk.optim.lr == 0.03 and lk.num_epochs == 200
    assert wrn.get_config("constnet,double_forward").model.double_forward


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
    from configs.gne.common import runlocal
    from configs.nn_mass import imagenet

    c = imagenet.get_config("resnet101")
    runlocal(c)
    tiny = MODELS.get("resnet101").tiny
    assert c.model.arch == tiny["arch"] and c.model.cifar_stem == tiny["cifar_stem"]
    assert dataclasses.is_dataclass(MODELS.get("resnet101"))


# ------------------------------------------------------ the CPU reproductions' digits variants


def test_gne_digits_option_keeps_the_recipe_and_scales_the_schedule():
    from configs.gne import cifar

    for variant in cifar.SEGMENTS["digits_init"]:
        full, small = cifar.get_config(variant), cifar.get_config(variant + ",digits")
        assert small.model.to_dict() == full.model.to_dict()  # same deep serial net, no norm
        assert small.model.norm == "none" and small.model.depth == 32
        for key in ("name", "lr", "momentum", "weight_decay", "wd_mask", "clip_value"):
            assert small.optim[key] == full.optim[key], key
        assert small.dataset.name == "digits" and small.dataset.mean == ()
        assert not small.dataset.augment.flip and small.num_epochs == 30
        # milestone 80 of 130 epochs → the same fraction of 30: round(80·30/130) = 18
        assert small.optim.schedule == "multistep(milestones=(18,), multiplier=0.1)"
        steps_per_epoch = 1437 // 128
        assert small.eval_every_steps == steps_per_epoch
        assert small.analysis.probe_every_steps == 3 * steps_per_epoch
    assert {cifar.get_config(v + ",digits").model.weight_init
            for v in cifar.SEGMENTS["digits_init"]} == {"kaiming_normal", "orthogonal",
                                                        "delta_orthogonal"}
    # e<N> wins in either order; ResNet-56's two milestones scale too
    assert cifar.get_config("orth_relu,e10,digits").num_epochs == 10
    assert cifar.get_config("orth_relu,digits,e10").optim.schedule == (
        "multistep(milestones=(6,), multiplier=0.1)")
    assert cifar.get_config("res_bn,digits").optim.schedule == (
        "multistep(milestones=(15, 22), multiplier=0.1)")


def test_constnet_digits_option_and_segment():
    from configs.constnet import wrn

    seg = {a: wrn.get_config(a) for a in wrn.SEGMENTS["digits"]}
    breakers = {a: (c.model.noise_scale, c.model.droprate, c.model.varnet)
                for a, c in seg.items()}
    assert breakers == {
        "constnet_deterministic,digits": (0.0, 0.0, False),  # nothing breaks the symmetry
        "constnet,digits": (wrn.CUDNN_NOISE, 0.0, False),
        "constnet,digits,noise0.001": (1e-3, 0.0, False),
        "constnet,digits,noise0.01": (1e-2, 0.0, False),
        "constnet_dropout,digits": (0.0, 0.01, False),
        "constnet_he,digits": (wrn.CUDNN_NOISE, 0.0, True),
    }
    c = seg["constnet,digits"]
    assert c.dataset.name == "digits" and (c.model.depth, c.model.widen_factor) == (10, 1)
    assert c.num_epochs == 30 and c.optim.lr == 0.03 and c.optim.weight_decay == 5e-4
    # ×0.2 at E−140, E−80, E−40 of 300 epochs → the same fractions of 30
    assert c.optim.schedule == "wrn(drops=(14, 8, 4), factor=0.2)"
    assert c.analysis.correlations_every_steps == c.eval_every_steps == 1437 // 128
    assert wrn.get_config("constnet,e10,digits").optim.schedule == (
        "wrn(drops=(5, 3, 1), factor=0.2)")
    with pytest.raises(ValueError, match="unknown option 'digits'.*ConstNet runs"):
        wrn.get_config("leakynet_h_hhhh_hhhh_hhhh,digits")  # init strings fix the depth


def test_online_norm_epoch_and_depth_options():
    from configs.online_norm import resnet

    assert resnet.SEGMENTS["digits"] == ["digits,online", "digits,batch", "digits,none"]
    c = resnet.get_config("digits,online,d8,e20")
    assert c.model.depth == 8 and c.num_epochs == 20
    assert c.optim.schedule == "multistep(milestones=(10, 15), multiplier=0.1)"
    assert c.model.norm == "online(preset='cifar10', ecm='ls')"
    c = resnet.get_config("cifar100,batch,e25")
    assert c.optim.schedule == "multistep(milestones=(10, 15, 20), multiplier=0.1)"
    assert resnet.get_config("cifar10,online").optim.schedule == (
        "multistep(milestones=(100, 150, 200), multiplier=0.1)")
    with pytest.raises(ValueError, match=r"unknown option 'x7'.*e<epochs>, d<depth>"):
        resnet.get_config("digits,online,x7")


def _dense_mlp_mass(w: int, d: int, tc: int) -> float:
    """NN-Mass of a dense MLP (REFERENCE.md §4.2): ρ·w·d, ρ = Σ min(tc, (i+1)w) / Σ (i+1)w."""
    pools = [(i + 1) * w for i in range(d - 2)]
    return sum(min(tc, p) for p in pools) / sum(pools) * w * d


def test_nn_mass_digits_segment_pairs_depths_at_matched_mass():
    from configs.nn_mass import mlp
    from gnj import models
    from gnj.proj.nn_mass.mass import nn_mass

    masses = {}
    for arg in mlp.SEGMENTS["digits_mass"]:
        c = mlp.get_config(arg)
        assert c.dataset.name == "digits" and c.batch_size == 64 and c.num_epochs == 20
        assert c.dataset.mean == (0.0,) and c.optim.name == "adam" and c.optim.lr == 0.001
        m = c.model
        masses[(m.depth, m.tc)] = nn_mass(models.build(m, num_classes=10)).mass
        assert masses[(m.depth, m.tc)] == pytest.approx(_dense_mlp_mass(m.width, m.depth, m.tc))
    assert sorted(masses) == [(d, tc) for d in (8, 16) for tc in (0, 3, 10, 30)]
    for tc in (3, 10, 30):  # the two depths differ in size but not much in NN-Mass
        assert abs(masses[(8, tc)] - masses[(16, tc)]) / masses[(8, tc)] < 0.1
    assert masses[(8, 0)] == masses[(16, 0)] == 0.0
