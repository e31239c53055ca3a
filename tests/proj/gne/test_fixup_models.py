"""Fixup ResNets at init: exactly zero logits and the stated per-branch scales.

Formulas: docs/proj/gne.md#fixup-resnets.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.models import build


def slow_case(test: str, params: dict) -> bool:
    """``make test`` keeps the bottleneck (resnet50) with the paper's variant and the basic block
    (resnet18) with the original; ``make test-all`` runs all four."""
    if test == "test_zero_logits_at_init":
        return (params["arch"] == "resnet50") != (params["variant"] == "ours")
    return False


@pytest.mark.parametrize("variant", ["original", "ours"])
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_zero_logits_at_init(arch, variant):
    model = build({"name": "fixup_resnet", "arch": arch, "variant": variant, "cifar_stem": True},
                  10)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
    v = model.init(jax.random.PRNGKey(1), x)
    np.testing.assert_array_equal(model.apply(v, x), 0.0)


def _std(model, shape, path):
    v = model.init(jax.random.PRNGKey(2), jnp.zeros(shape))["params"]
    for p in path:
        v = v[p]
    return float(jnp.std(v)), v.shape


@pytest.mark.parametrize("variant,exponent,fan", [("original", -1 / 4, "out"),
                                                  ("ours", -1 / 3, "in")])
def test_bottleneck_branch_scale(variant, exponent, fan):
    model = build({"name": "fixup_resnet", "arch": "resnet50", "variant": variant,
                   "cifar_stem": True}, 10)
    std, shape = _std(model, (1, 8, 8, 3), ("layer3_0", "conv2", "kernel"))
    kh, kw, cin, cout = shape
    n = kh * kw * (cout if fan == "out" else cin)
    assert std == pytest.approx(math.sqrt(2 / n) * 16**exponent, rel=0.05)
    zero, _ = _std(model, (1, 8, 8, 3), ("layer3_0", "conv3", "kernel"))
    assert zero == 0.0
    down, dshape = _std(model, (1, 8, 8, 3), ("layer3_0", "downsample", "kernel"))
    expected = (math.sqrt(2 / dshape[3]) if variant == "original"
                else math.sqrt(1 / dshape[2]))
    assert down == pytest.approx(expected, rel=0.05)


def test_basic_block_exponent_ours():
    model = build({"name": "fixup_resnet", "arch": "resnet18", "variant": "ours",
                   "cifar_stem": True}, 10)
    std, shape = _std(model, (1, 8, 8, 3), ("layer4_1", "conv1", "kernel"))
    assert std == pytest.approx(math.sqrt(2 / (9 * shape[2])) * 8 ** (-1 / 1.5), rel=0.05)


def test_bad_variant():
    with pytest.raises(ValueError, match="variant 'mine'; valid: original, ours"):
        build({"name": "fixup_resnet", "variant": "mine"}, 10).init(
            jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))


def test_cifar_fixup_scalars_and_gain():
    spec = "fixup(num_layers=27, m=2, variant='cifar', p=2)"
    model = build({"name": "fixup_resnet_cifar", "depth": 56, "weight_init": spec}, 10)
    v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
    block = v["stage2_block3"]
    assert sorted(block) == ["bias0", "bias1", "bias2", "bias3", "conv1", "conv2", "scale"]
    assert "bias" not in block["conv1"]  # no conv bias with the scalars
    std = float(jnp.std(block["conv1"]["kernel"]))
    assert std == pytest.approx(math.sqrt(2 / (9 * 32)) * 27 ** -0.5, rel=0.05)
    with pytest.raises(ValueError, match="scalars=True .* needs norm='none'"):
        build({"name": "fixup_resnet_cifar", "depth": 20, "norm": "batch"}, 10).init(
            jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
