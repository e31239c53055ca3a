"""The Online Normalization config families: the batch-size rule, epochs and depth."""

import pytest


def test_online_norm_imagenet_batch_rule():
    from configs.online_norm import imagenet

    c = imagenet.get_config("resnet50,online,b32")
    m = 0.9 ** (32 / 256)
    assert c.optim.momentum == pytest.approx(m, rel=1e-12)
    assert c.optim.lr == pytest.approx(0.1 * (32 / 256) * (1 - m) / 0.1, rel=1e-12)
    assert "preset='imagenet'" in c.model.norm
    base = imagenet.get_config("resnet18,group")
    assert base.optim.lr == 0.1 and base.optim.momentum == 0.9 and "groups=32" in base.model.norm


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
