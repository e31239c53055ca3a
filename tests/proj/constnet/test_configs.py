"""The ConstNet / LeakyNet config family: the README runs, the sweep, the digits stand-in."""

import pytest


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
