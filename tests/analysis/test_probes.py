"""Training-time probes and grad_l2: NumPy re-derivations and the loop hook."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gnj.analysis import probes
from gnj.models import build
from gnj.state import TrainState


def test_gram_statistics_match_numpy():
    x = np.random.default_rng(0).normal(size=(6, 3, 3, 4)) + 0.5
    with jax.enable_x64(True):
        cosine, rank = probes.gram_stats(jnp.asarray(x))
    m = x.reshape(6, -1)
    m = m / np.linalg.norm(m, axis=1, keepdims=True)
    g = m @ m.T
    expected_cos = np.mean([(g[i].sum() - 1) / 5 for i in range(6)])  # the reference's form
    assert float(cosine) == pytest.approx(expected_cos, rel=1e-10)
    assert float(rank) == pytest.approx(6 / np.linalg.eigvalsh(g).max(), rel=1e-10)
    # Identical samples: cosine 1, stable rank 1. Orthogonal samples: cosine 0, rank N.
    c, r = probes.gram_stats(jnp.asarray(np.repeat(x[:1], 6, axis=0), jnp.float32))
    assert float(c) == pytest.approx(1.0, abs=1e-5) and float(r) == pytest.approx(1.0, abs=1e-4)
    c, r = probes.gram_stats(jnp.eye(5).reshape(5, 5, 1) * 3.0)
    assert float(c) == pytest.approx(0.0, abs=1e-7) and float(r) == pytest.approx(5.0)


def test_channel_variance_and_conv_std_match_numpy():
    x = np.random.default_rng(1).normal(size=(4, 5, 5, 3)) * np.array([1.0, 2.0, 3.0]) + 1.0
    with jax.enable_x64(True):
        var = float(probes.channel_var(jnp.asarray(x)))
        std = float(probes.conv_std(jnp.asarray(x)))
        stats = probes.activation_stats(jnp.asarray(x))
    flat = x.reshape(-1, 3)  # torch: x.transpose(0, 1).reshape(C, -1).var(1) (unbiased)
    assert var == pytest.approx(np.mean([np.var(flat[:, c], ddof=1) for c in range(3)]),
                                rel=1e-12)
    assert std == pytest.approx(np.mean([np.std(flat[:, c], ddof=1) for c in range(3)]),
                                rel=1e-12)
    assert float(stats["act_var"]) == pytest.approx(var, rel=1e-12)


class _ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        h = nn.Conv(4, (3, 3), padding=1, name="conv")(x)
        a = nn.relu(h)
        return nn.Dense(3, name="head")(jnp.mean(a, axis=(1, 2)))


def test_conv_gradient_norm_std_and_grad_l2_match_a_direct_computation():
    model = _ConvNet()
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 6, 6, 2))
    labels = jnp.array([0, 1, 2, 0, 1])
    v = model.init(jax.random.PRNGKey(1), x)
    out = probes.layer_probes(model, v, x, labels)
    p = v["params"]

    def rest(h):  # the network after the conv output, written out by hand
        logits = jnp.mean(jax.nn.relu(h), axis=(1, 2)) @ p["head"]["kernel"] + p["head"]["bias"]
        return jnp.mean(jax.nn.logsumexp(logits, -1)
                        - jnp.take_along_axis(logits, labels[:, None], -1)[:, 0])

    def conv(k, b):
        return jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC")) + b

    h = conv(p["conv"]["kernel"], p["conv"]["bias"])
    assert out["probe/conv/grad_norm"] == pytest.approx(
        float(jnp.linalg.norm(jax.grad(rest)(h))), rel=1e-4)
    h64 = np.asarray(h, np.float64).reshape(-1, 4)
    assert out["probe/conv/std"] == pytest.approx(np.std(h64, axis=0, ddof=1).mean(), rel=1e-4)
    g_kernel = jax.grad(lambda k: rest(conv(k, p["conv"]["bias"])))(p["conv"]["kernel"])
    assert out["grad_l2/conv/kernel"] == pytest.approx(float(jnp.sum(g_kernel**2)), rel=1e-4)
    assert "grad_l2/head/kernel" in out and "grad_l2/conv/bias" not in out  # ≥ 2-D only
    assert out["probe/loss"] == pytest.approx(float(rest(h)), rel=1e-5)


def test_probe_hook_on_a_batchnorm_resnet_in_training_mode():
    model = build({"name": "resnet_cifar", "depth": 8, "width": 4}, 10)
    images = (np.arange(6 * 8 * 8 * 3).reshape(6, 8, 8, 3) % 256).astype(np.uint8)
    labels = jnp.arange(6) % 10
    v = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 8, 8, 3)))
    state = TrainState(step=jnp.int32(3), params=v["params"],
                       model_state={"batch_stats": v["batch_stats"]}, opt_state=None,
                       rng=jax.random.PRNGKey(2))
    config = ml_collections.ConfigDict(dict(analysis=dict(probe_every_steps=1)))
    seen = []
    prep = lambda x, key: seen.append(key) or x.astype(jnp.float32) / 255.0 - 0.5
    out = probes.build_probe(config, model, prep)(state, {"image": images, "label": labels})
    assert seen == [None]  # preprocessed without augmentation
    convs = {k for k in out if k.endswith("/grad_norm")}
    assert len(convs) == 7  # stem + 2 convs × 3 blocks (option A: no shortcut convs)
    acts = {k.rsplit("/", 1)[0] for k in out if k.endswith("/stable_rank")}
    assert len(acts) == 7  # stem act + 2 per block
    assert all(np.ndim(val) == 0 and np.isfinite(float(val)) for val in out.values())
    # Keys come in forward (depth) order, not the sorted order a jit returns.
    grad_l2 = [k for k in out if k.startswith("grad_l2/")]
    assert grad_l2 == ["grad_l2/stem/kernel"] + [
        f"grad_l2/stage{s}_block0/conv{c}/kernel" for s in (1, 2, 3) for c in (1, 2)] + [
        "grad_l2/head/kernel"]
    assert [k for k in out if k.endswith("/grad_norm")] == ["probe/stem/grad_norm"] + [
        f"probe/stage{s}_block0/conv{c}/grad_norm" for s in (1, 2, 3) for c in (1, 2)]
    # Training mode: the first BatchNorm normalises with batch statistics, so the activation
    # after it has per-channel variance of a rectified unit normal ((π−1)/(2π)), not the
    # variance an eval-mode pass with the initial running stats (mean 0, var 1) would give.
    x = jnp.asarray(images, jnp.float32) / 255.0 - 0.5
    stem = jax.lax.conv_general_dilated(x, v["params"]["stem"]["kernel"], (1, 1),
                                        ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    bn = (stem - stem.mean((0, 1, 2))) / jnp.sqrt(stem.var((0, 1, 2)) + 1e-5)
    a = np.asarray(jax.nn.relu(bn), np.float64).reshape(-1, 4)
    key = next(k for k in out if k.endswith("/act_var") and "block" not in k)
    assert out[key] == pytest.approx(np.var(a, axis=0, ddof=1).mean(), rel=1e-3)


@pytest.mark.slow
def test_probes_are_logged_during_training(tfds_dir, tmp_path):
    from configs import default
    from gnj import train
    from gnj.metrics import read_jsonl

    c = default.get_config("runlocal")
    c.dataset.data_dir = tfds_dir
    c.quiet = True
    c.analysis.probe_every_steps = 2
    train.train_and_evaluate(c, str(tmp_path))
    records = read_jsonl(str(tmp_path / "metrics.jsonl"))
    keys = set(records[0])
    convs = {k for k in keys if k.startswith("probe/") and k.endswith("/grad_norm")}
    assert len(convs) == 7  # "train/grad_norm" is the loop's own
    assert any(k.endswith("/stable_rank") for k in keys)
    assert all(np.isfinite(r[k]) for r in records for k in convs if k in r)
