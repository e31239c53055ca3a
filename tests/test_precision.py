"""Mixed precision (gnj/precision.py): bfloat16 compute with float32 storage, float64 throughout.

- every registered norm given bfloat16 input (and bfloat16-cast parameters, as the train step
  casts them) stays within bfloat16 rounding of its float32 output, and keeps float32 statistics;
- the train step under ``dtype=bfloat16`` keeps parameters, optimizer state and BatchNorm
  statistics in float32, runs the convolutions in bfloat16, and its loss falls as the float32
  run's does;
- ``float64`` everywhere: no float32 leaf in the state, gradients agree with a float64 NumPy
  re-derivation of a linear softmax model to 1e-12;
- bad dtypes and float64 without 64-bit JAX are refused with the valid choices.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from gnj import models, optim, precision, train
from gnj.registry import NORMS
from tests.conftest import run_python
from tests.test_norm_registry_training import SPEC_FOR_TINY

BF16_EPS = 2.0 ** -8  # bfloat16 keeps 8 significant bits


def _unique_norms() -> list[str]:
    seen, names = set(), []
    for name in NORMS.names():
        if id(NORMS.get(name)) not in seen:
            seen.add(id(NORMS.get(name)))
            names.append(name)
    return names


@pytest.mark.parametrize("name", _unique_norms())
def test_every_norm_in_bfloat16_is_within_rounding_of_float32(name):
    spec = SPEC_FOR_TINY.get(name, name)
    x = 1.5 + 2.0 * jax.random.normal(jax.random.PRNGKey(0), (8, 4, 4, 8), jnp.float32)
    norm = NORMS.lookup(spec)()
    variables = norm.init(jax.random.PRNGKey(1), x, True)
    params = variables.get("params", {})
    bf16_vars = {**variables, "params": precision.cast_floating(params, jnp.bfloat16)}
    y32, s32 = norm.apply(variables, x, True, mutable=True)
    y16, s16 = norm.apply(bf16_vars, x.astype(jnp.bfloat16), True, mutable=True)
    assert y16.dtype == jnp.bfloat16
    scale = float(jnp.max(jnp.abs(y32))) or 1.0
    # input, parameters and output each rounded once to bfloat16: a few units of 2^-8
    np.testing.assert_allclose(np.asarray(y16, np.float32), np.asarray(y32),
                               atol=4 * BF16_EPS * scale, rtol=0)
    for path, value in jax.tree_util.tree_leaves_with_path(s16.get("batch_stats", {})):
        assert value.dtype == jnp.float32, jax.tree_util.keystr(path)  # statistics stay float32
    for a, b in zip(jax.tree.leaves(s16.get("batch_stats", {})),
                    jax.tree.leaves(s32.get("batch_stats", {}))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=4 * BF16_EPS * scale)


def _digits_like_batch(n=32, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.int32)
    images = rng.integers(0, 40, (n, 8, 8, 1))
    images[np.arange(n), labels % 8, labels // 2 % 8, 0] = 255  # a learnable bright pixel
    return {"image": jnp.asarray(images, jnp.uint8), "label": jnp.asarray(labels)}


def _preprocess(x, key):
    return x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x / 255.0


def _run(policy, steps=12):
    model = models.build(dict(name="resnet_cifar", depth=8, width=8, norm="batch",
                              dtype=policy.dtype.name, param_dtype=policy.param_dtype.name), 10)
    c = default.get_config()
    tx, sched = optim.build(c.optim, 10, 100)
    state = train.init_state(model, tx, (8, 8, 1), 0, policy)
    step = jax.jit(train.make_train_step(model, tx, _preprocess, sched, 0.0, policy))
    batch, losses = _digits_like_batch(), []
    for _ in range(steps):
        state, m = step(state, batch)
        losses.append(float(m["train/loss"]))
    return state, np.array(losses), step.lower(state, batch).as_text()


def test_bfloat16_compute_keeps_float32_state_and_learns_like_float32():
    state32, loss32, _ = _run(precision.FLOAT32)
    policy = precision.Precision(jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))
    state16, loss16, hlo = _run(policy)
    for tree in (state16.params, state16.opt_state, state16.model_state):
        for leaf in jax.tree.leaves(tree):
            if jnp.issubdtype(leaf.dtype, jnp.floating):
                assert leaf.dtype == jnp.float32
    # the program's convolutions are bfloat16 (XLA:CPU then computes them in float32)
    convs = [line for line in hlo.splitlines() if "stablehlo.convolution" in line]
    assert convs and all("bf16" in line for line in convs)
    # same start (the initial loss differs by rounding only), and it falls alike
    np.testing.assert_allclose(loss16[0], loss32[0], rtol=2e-2)
    assert loss16[-1] < 0.5 * loss16[0] and loss32[-1] < 0.5 * loss32[0]
    np.testing.assert_allclose(loss16[-1], loss32[-1], rtol=0.25)


def test_bad_dtypes_are_refused():
    with pytest.raises(ValueError, match=r"config.model.dtype='float8'; valid: float32, bfloat16"):
        precision.from_config({"dtype": "float8"})
    if not jax.config.jax_enable_x64:
        with pytest.raises(ValueError, match="JAX_ENABLE_X64=1"):
            precision.from_config({"dtype": "float64", "param_dtype": "float64"})
    model_cfg = {"name": "mlp", "hidden": (4,), "dtype": "bfloat16", "param_dtype": "float32"}
    assert models.build(model_cfg, 3).hidden == (4,)  # precision keys are not model options


_FLOAT64_SCRIPT = r"""
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np, optax
from gnj import models, precision, train
policy = precision.from_config({"dtype": "float64", "param_dtype": "float64"})
model = models.build({"name": "mlp", "hidden": (), "use_bias": True}, 3)
tx = optax.sgd(0.5)
if train.cross_entropy(jnp.zeros((1, 2)), jnp.zeros((1,), jnp.int32)).dtype != jnp.float64:
    raise SystemExit("cross_entropy computes in float32")
state = train.init_state(model, tx, (5,), 0, policy)
leaves = jax.tree.leaves((state.params, state.model_state, state.opt_state))
assert all(l.dtype == jnp.float64 for l in leaves if jnp.issubdtype(l.dtype, jnp.floating))
rng = np.random.default_rng(0)
x, y = rng.normal(size=(6, 5)), rng.integers(0, 3, 6).astype(np.int32)
w0 = np.asarray(state.params["head"]["kernel"]); b0 = np.asarray(state.params["head"]["bias"])
step = jax.jit(train.make_train_step(model, tx, lambda x, k: x, optax.constant_schedule(0.5),
                                     0.0, policy))
state, m = step(state, {"image": jnp.asarray(x), "label": jnp.asarray(y)})
# float64 NumPy: softmax cross-entropy gradient of a linear model, one SGD step
z = x @ w0 + b0
p = np.exp(z - z.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
p[np.arange(6), y] -= 1
gw, gb = x.T @ p / 6, p.mean(0)
assert state.params["head"]["kernel"].dtype == jnp.float64
np.testing.assert_allclose(np.asarray(state.params["head"]["kernel"]), w0 - 0.5 * gw, rtol=0,
                           atol=1e-12)
np.testing.assert_allclose(np.asarray(state.params["head"]["bias"]), b0 - 0.5 * gb, rtol=0,
                           atol=1e-12)
print("OK")
"""


def test_float64_everywhere_matches_a_float64_numpy_step():
    proc = run_python(["-c", _FLOAT64_SCRIPT], check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK")


@pytest.mark.slow
def test_default_config_in_bfloat16_reaches_float32_accuracy(tfds_dir, tmp_path):
    """`make run`'s config (digits, 40 epochs): bfloat16 compute ends within noise of float32
    (360 test images: one image is 0.28 %; seeds move the float32 result by about 1 %)."""
    result = {}
    for dtype in ("float32", "bfloat16"):
        c = default.get_config()
        c.dataset.data_dir = tfds_dir
        c.quiet = True
        c.model.dtype = dtype
        result[dtype] = train.train_and_evaluate(c, str(tmp_path / dtype))["eval/accuracy"]
    assert result["float32"] > 0.95
    assert abs(result["bfloat16"] - result["float32"]) <= 0.02, result
