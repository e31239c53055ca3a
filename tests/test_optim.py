"""Optimizers against NumPy re-derivations of PyTorch's SGD and the schedules' closed forms."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from gnj import optim


def _cfg(**kw):
    base = dict(name="sgd", lr=0.1, momentum=0.9, nesterov=False, schedule="constant",
                warmup_epochs=0.0, weight_decay=0.0, wd_mask=".*", lr_mult_regex="",
                lr_mult=1.0, wd_mult=1.0, clip_value=0.0, clip_norm=0.0)
    base.update(kw)
    return ml_collections.ConfigDict(base)


def _torch_sgd(params, grads_seq, lr, momentum, wd, wd_on, lr_mult, clip_value=0.0):
    """PyTorch SGD (dampening 0): v ← m·v + (g + wd·w); w ← w − lr·v; per-param wd / lr mult."""
    w = {k: v.copy() for k, v in params.items()}
    buf = {k: np.zeros_like(v) for k, v in params.items()}
    for grads in grads_seq:
        for k in w:
            g = np.clip(grads[k], -clip_value, clip_value) if clip_value else grads[k]
            g = g + (wd[k] if wd_on[k] else 0.0) * w[k]
            buf[k] = momentum * buf[k] + g
            w[k] = w[k] - lr * lr_mult[k] * buf[k]
    return w


def test_sgd_with_masked_decay_and_group_lr_matches_pytorch_semantics():
    rng = np.random.default_rng(0)
    params = {"conv": {"kernel": rng.normal(size=(3, 4))}, "bias1": rng.normal(size=(4,)),
              "scale": rng.normal(size=())}
    grads_seq = [jax.tree.map(lambda p: rng.normal(size=np.shape(p)), params) for _ in range(4)]
    cfg = _cfg(weight_decay=1e-2, wd_mask="kernel|bias", lr_mult_regex="bias|scale",
               lr_mult=0.1, wd_mult=0.0, clip_value=0.5)
    tx, _ = optim.build(cfg, steps_per_epoch=10, total_steps=40)
    p = jax.tree.map(jnp.asarray, params)
    st = tx.init(p)
    for g in grads_seq:
        u, st = tx.update(jax.tree.map(jnp.asarray, g), st, p)
        p = optax.apply_updates(p, u)
    flat = lambda t: {"conv": t["conv"]["kernel"], "bias1": t["bias1"], "scale": t["scale"]}
    expected = _torch_sgd(flat(params), [flat(g) for g in grads_seq], 0.1, 0.9,
                          wd={"conv": 1e-2, "bias1": 0.0, "scale": 0.0},
                          wd_on={"conv": True, "bias1": False, "scale": False},
                          lr_mult={"conv": 1.0, "bias1": 0.1, "scale": 0.1}, clip_value=0.5)
    for k, v in flat(jax.device_get(p)).items():
        np.testing.assert_allclose(v, expected[k], rtol=1e-5, atol=1e-6)


def test_multistep_schedule_in_epochs():
    sched = optim.build_schedule(_cfg(schedule="multistep(milestones=(2, 3), multiplier=0.1)"),
                                 steps_per_epoch=10, total_steps=50)
    vals = [float(sched(s)) for s in (0, 19, 20, 29, 30, 49)]
    np.testing.assert_allclose(vals, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_cosine_and_warmup():
    sched = optim.build_schedule(_cfg(schedule="cosine", warmup_epochs=1), 10, 110)
    np.testing.assert_allclose(float(sched(0)), 0.0, atol=1e-9)
    np.testing.assert_allclose(float(sched(5)), 0.05, rtol=1e-6)
    # after warm-up the cosine runs on its own clock from step 10
    np.testing.assert_allclose(float(sched(10 + 55)), 0.1 * 0.5 * (1 + np.cos(np.pi * 55 / 110)),
                               rtol=1e-5)


def test_global_norm_clipping():
    tx, _ = optim.build(_cfg(momentum=0.0, clip_norm=1.0, lr=1.0), 1, 1)
    g = {"a": jnp.array([3.0, 4.0])}
    u, _ = tx.update(g, tx.init(g), g)
    np.testing.assert_allclose(u["a"], [-0.6, -0.8], rtol=1e-6)


def test_unknown_optimizer_and_schedule():
    with pytest.raises(ValueError, match="valid optimizers"):
        optim.build(_cfg(name="lion"), 1, 1)
    with pytest.raises(ValueError, match="valid schedules"):
        optim.build(_cfg(schedule="step"), 1, 1)
