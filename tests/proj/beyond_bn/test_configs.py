"""The Beyond-BatchNorm config family: the lr rule against the reference scheduler, norms."""

import numpy as np
import pytest

from gnj import optim


def _lubana_lr(epoch_float, batch, init_lr, warmup, iters):
    """Beyond-BatchNorm's LR_Scheduler (docs/proj/beyond_bn.md), re-derived per iteration."""
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
    assert cifar.get_config("vgg10,none").model.norm == "none"  # NORMS "none": no norm
    assert cifar.get_config("vgg10,plain").to_dict() == cifar.get_config("vgg10,none").to_dict()
    with pytest.raises(ValueError, match="needs norm 'group'"):
        cifar.get_config("vgg10,batch,p0.5")
    c = cifar.get_config("vgg40,batch,cifar10")
    assert c.dataset.name == "cifar10" and c.dataset.augment.crop_padding == 0
    assert c.dataset.augment.flip and c.dataset.mean == (0.5, 0.5, 0.5)
