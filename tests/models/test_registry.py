"""Registry-wide model tests: every model in ``MODELS`` (whoever registered it) declares a
``tiny`` build, trains one SGD step at that size with a finite loss and finite gradients, and
initialises under every norm in {batch, group(groups=2), none} × weight_init in
{kaiming_normal, orthogonal} that it takes. Registering a model covers it here automatically."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gnj.models  # noqa: F401  (registers every model)
from gnj.registry import INITS, MODELS, NORMS, spec_name

NOT_TRAINED = ("intermediates", "perturbations", "backward_state")
# Compile-time savers (this is a correctness test, not a benchmark): RBG keys avoid XLA's slow
# compile of unrolled threefry in init, and a low backend optimisation level cuts XLA:CPU compile
# time ~3× for these many small programs.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _key(seed: int) -> jax.Array:
    return jax.random.key(seed, impl="rbg")
NORM_SPECS = ("batch", "group(groups=2)", "none")
INIT_SPECS = ("kaiming_normal", "orthogonal")


def _distinct_models() -> list[str]:
    """One name per distinct tiny build: aliases and presets sharing a ``tiny`` dict are one."""
    seen, names = set(), []
    for name in MODELS.names():
        tiny = getattr(MODELS.get(name), "tiny", None)
        key = id(tiny) if tiny is not None else name
        if key not in seen:
            seen.add(key)
            names.append(name)
    return names


MODEL_NAMES = _distinct_models()


def _tiny(name: str) -> tuple[tuple[int, ...], dict]:
    factory = MODELS.get(name)
    if "input_shape" not in getattr(factory, "tiny", {}):
        pytest.skip(f"model {name!r} ({factory.__module__}) has no tiny build; "
                    "test_every_model_declares_tiny fails for it")
    kw = dict(factory.tiny)
    return tuple(kw.pop("input_shape")), kw


def test_every_model_declares_tiny():
    """Every registered model has ``tiny: ClassVar[dict]`` with an ``input_shape`` key."""
    missing = [n for n in MODELS.names()
               if "input_shape" not in getattr(MODELS.get(n), "tiny", {})]
    assert not missing, f"models without a tiny build (tiny ClassVar with input_shape): {missing}"


def _rngs(key):
    k1, k2 = jax.random.split(key)
    return {"dropout": k1, "noise": k2}


#: models whose SGD step is the largest compile of the grid; their layers are trained by smaller
#: relatives in ``make test`` (resnet18 / resnet_cifar / densenet_cifar / mobilenet_v2) and
#: initialised in every norm × init combination above.
SLOW_SGD_STEP = ("resnet101", "fixup_resnet", "densenet_bc", "mobilenet_v1")


def slow_case(test: str, params: dict) -> bool:
    return test == "test_every_model_trains_one_sgd_step" and params["name"] in SLOW_SGD_STEP


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_trains_one_sgd_step(name):
    shape, kw = _tiny(name)
    model = MODELS.get(name)(num_classes=3, **kw)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, *shape)), jnp.float32)
    y = jnp.asarray([0, 1, 2, 1], jnp.int32)
    tx = optax.sgd(0.01, momentum=0.9)
    init_key, step_key = jax.random.split(_key(0))
    collections = jax.eval_shape(
        lambda: model.init({"params": init_key, **_rngs(init_key)}, x[:2], train=False))
    mutable = [k for k in collections if k != "params" and k not in NOT_TRAINED]

    def run(x, y):  # init, one SGD step and an eval pass in one program: a single compile
        variables = model.init({"params": init_key, **_rngs(init_key)}, x[:2], train=False)
        params = variables["params"]
        state = {k: v for k, v in variables.items() if k != "params"}

        def loss_fn(p):
            logits, new_state = model.apply({"params": p, **state}, x, train=True,
                                            mutable=mutable, rngs=_rngs(step_key))
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, (logits, new_state)

        (loss, (logits, new_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, _ = tx.update(grads, tx.init(params), params)
        new_params = optax.apply_updates(params, updates)
        moved = jnp.max(jnp.stack([jnp.max(jnp.abs(a - b)) for a, b in
                                   zip(jax.tree.leaves(new_params), jax.tree.leaves(params))]))
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        out = model.apply({"params": new_params, **state, **new_state}, x, train=False)
        return loss, logits, finite, moved, out

    compiled = jax.jit(run).lower(x, y).compile(compiler_options=FAST_COMPILE)
    loss, logits, finite, moved, out = compiled(x, y)
    assert logits.shape == (4, 3) and out.shape == (4, 3)
    assert np.isfinite(float(loss)) and bool(finite)
    # the step moved something (a zero-init classifier still gets a gradient through its bias)
    assert float(moved) > 0
    assert np.isfinite(np.asarray(out)).all()


def _combos():
    params = []
    for name in MODEL_NAMES:
        fields = getattr(MODELS.get(name), "__dataclass_fields__", {})
        norms = NORM_SPECS if "norm" in fields else (None,)
        inits = INIT_SPECS if "weight_init" in fields else (None,)
        for norm in norms:
            for init in inits:
                marks = []
                if norm is not None and spec_name(norm) not in NORMS:
                    marks.append(pytest.mark.skip(reason=f"norm {norm!r} not registered yet"))
                if init is not None and init not in INITS:
                    marks.append(pytest.mark.skip(reason=f"init {init!r} not registered yet"))
                params.append(pytest.param(name, norm, init, marks=marks,
                                           id=f"{name}-{norm}-{init}"))
    return params


@pytest.mark.parametrize("name,norm,init", _combos())
def test_every_model_initialises_with_norms_and_inits(name, norm, init):
    shape, kw = _tiny(name)
    extra = {k: v for k, v in (("norm", norm), ("weight_init", init)) if v is not None}
    model = MODELS.get(name)(num_classes=3, **{**kw, **extra})
    # eval_shape traces init (all shape logic and option checks) without computing anything
    v = jax.eval_shape(lambda: model.init({"params": _key(0), **_rngs(_key(1))},
                                          jnp.zeros((2, *shape)), train=False))
    assert jax.tree.leaves(v["params"])
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, *shape)), train=False), v)
    assert out.shape == (2, 3)
