"""The GNE config families: the CIFAR catalogue and its recipe, the digits stand-in."""

import re

import pytest


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
    assert r.mixup_alpha == 1.0 and r.model.name == "fixup_resnet_cifar"
    assert "p=1.5" in r.model.weight_init
    assert r.optim.weight_decay == 1e-4 and r.optim.lr_mult == 0.1
    assert cifar.get_config("dn_bn").optim.schedule.startswith("multistep(milestones=(50, 80)")


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
