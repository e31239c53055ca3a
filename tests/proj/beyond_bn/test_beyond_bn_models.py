"""Beyond-BN ResNet-56: conv bias rule, SkipInit identity, the preact in-place-ReLU shortcut."""


import jax
import jax.numpy as jnp
import numpy as np

from gnj.models import build
from tests.models.test_zoo_part1 import (
    _intermediates,
    init,
)


def test_lubana_conv_bias_only_for_reparametrised_convs():
    shape = (8, 8, 3)
    plain = build({"name": "resnet56_lubana", "depth": 8, "width": 4, "norm": "none"}, 10)
    v = jax.eval_shape(lambda: plain.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape))))
    assert "bias" not in v["params"]["stage1_block0"]["conv1"]  # Plain: no bias
    sws = build({"name": "resnet56_lubana", "depth": 8, "width": 4, "norm": "none",
                 "conv": "sws"}, 10)
    v = jax.eval_shape(lambda: sws.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape))))
    assert "bias" in v["params"]["stage1_block0"]["conv1"]
    # GNEDNN's rule is the other way round: a bias exactly when there is no norm
    gne = build({"name": "resnet_cifar", "depth": 8, "width": 4, "norm": "none"}, 10)
    v = jax.eval_shape(lambda: gne.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape))))
    assert "bias" in v["params"]["stage1_block0"]["conv1"]


def test_lubana_skipinit_blocks_are_identity_at_init():
    # post-activation with skip_gain = 0: block = relu(0 + x) = x for stride-1 blocks (x ≥ 0)
    model = build({"name": "resnet56_lubana", "depth": 14, "width": 4, "skipinit": True}, 10)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    v = init(model, x, 1)
    inter = _intermediates(model, v, x)
    np.testing.assert_array_equal(inter["stage1_block1"]["__call__"][0],
                                  inter["stage1_block0"]["__call__"][0])
    np.testing.assert_array_equal(inter["stage3_block1"]["__call__"][0],
                                  inter["stage3_block0"]["__call__"][0])
    # preact: stem conv-norm-act kept, no final norm; stride-1 blocks are the identity
    pre = build({"name": "resnet56_lubana", "depth": 14, "width": 4, "skipinit": True,
                 "preact": True}, 10)
    pv = init(pre, x, 1)
    assert "stem_norm" in pv["params"] and "final_norm" not in pv["params"]
    inter = _intermediates(pre, pv, x)
    np.testing.assert_array_equal(inter["stage2_block1"]["__call__"][0],
                                  inter["stage2_block0"]["__call__"][0])


def test_lubana_preact_without_norm_shortcut_reads_the_inplace_relu():
    """Beyond-BN preact block, no norm, SkipInit gain 0: the output is the identity shortcut,
    which in the reference reads the block input after its in-place ReLU."""
    from gnj.models.layers import Layers
    from gnj.models.resnet_cifar import PreActBlock
    from gnj.proj.beyond_bn.models import InplaceReluPreActBlock

    x = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 4, 3))
    layers = Layers.from_specs(norm="none")
    for reads_relu, expected in ((True, np.maximum(np.asarray(x), 0)), (False, np.asarray(x))):
        cls = InplaceReluPreActBlock if reads_relu else PreActBlock
        block = cls(3, 1, layers, "C", skipinit=True)
        v = block.init(jax.random.PRNGKey(0), x)
        np.testing.assert_allclose(block.apply(v, x), expected, rtol=1e-6)
    lubana = build({"name": "resnet56_lubana", "norm": "none", "preact": True}, 10)
    assert lubana.block_class() is InplaceReluPreActBlock
    assert build({"name": "resnet56_lubana", "preact": True}, 10).block_class() is PreActBlock
