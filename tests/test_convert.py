"""gnj.interop.convert: reference-layout state dicts into gnj variables (numpy dicts, no torch)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnj.interop import convert
from gnj.models import build


def _mlp_state_dict(rng):
    # the reference's Dense_MLP(4, 4, 3, input_dims=6, num_classses=3): Linear weights (out, in)
    sizes = [(6, 4), (4, 4), (7, 4), (7, 3)]
    sd = {}
    for j, (i, o) in enumerate(sizes):
        sd[f"features.{j}.weight"] = rng.normal(size=(o, i))
        sd[f"features.{j}.bias"] = rng.normal(size=o)
    sd["batchnorm.0.weight"] = np.ones(4)  # built by the reference, never used
    return sd


def test_from_torch_transposes_linear_weights_and_skips_unused_tensors():
    model = build({"name": "dense_mlp", "width": 4, "depth": 4, "tc": 3}, 3)
    v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 6)))
    sd = _mlp_state_dict(np.random.default_rng(0))
    out = convert.from_torch(model, v, sd)
    np.testing.assert_array_equal(out["params"]["layer2"]["kernel"], sd["features.2.weight"].T
                                  .astype(np.float32))
    np.testing.assert_array_equal(out["params"]["layer3"]["bias"],
                                  sd["features.3.bias"].astype(np.float32))


def test_from_torch_lists_missing_unexpected_and_misshaped_tensors():
    model = build({"name": "dense_mlp", "width": 4, "depth": 4, "tc": 3}, 3)
    v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 6)))
    sd = _mlp_state_dict(np.random.default_rng(0))
    del sd["features.1.bias"]
    sd["features.9.weight"] = np.zeros((2, 2))
    sd["features.0.weight"] = np.zeros((5, 6))
    with pytest.raises(ValueError) as err:
        convert.from_torch(model, v, sd)
    msg = str(err.value)
    assert "missing in the state dict: ['params/layer0/kernel', 'params/layer1/bias']" in msg
    assert "unexpected tensors: ['features.9.weight']" in msg
    assert "features.0.weight (5, 6) vs params/layer0/kernel (6, 4)" in msg
    with pytest.raises(ValueError,
                       match="no reference name map for MobileNetV2; supported: ConstNet"):
        convert.name_map(build({"name": "mobilenet_v2"}, 3))


def test_each_paper_registers_its_layouts_and_unknown_families_are_refused():
    families = {convert.NAME_MAPS.get(n).family for n in convert.NAME_MAPS.names()}
    assert {"ConstNet", "LeakyNet", "DenseCNN", "DenseCNNDepthwise", "DenseMLP", "VGG",
            "ResNet56Lubana", "ResNetCifar", "SerialNet", "DenseNetCifar", "FixupResNet",
            "MobileNetV1", "MLP"} <= families
    with pytest.raises(ValueError, match="no reference name map for object; supported: .*VGG"):
        convert.name_map(object())


def test_one_family_two_layouts_chosen_by_the_model():
    option_a = convert.name_map(build({"name": "resnet_cifar", "depth": 8, "shortcut": "A"}, 10))
    option_b = convert.name_map(build({"name": "resnet_cifar", "depth": 8, "shortcut": "B"}, 10))
    assert "layer2.0.downsample.0" in option_b.modules
    assert "layer2.0.downsample.0" not in option_a.modules and "norm1" in option_a.modules
