"""Every registered model builds at its tiny size and trains one step with a finite loss; and
every model × {batch, group, none} × {kaiming_normal, orthogonal} initialises."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gnj import train
from gnj.registry import INITS, MODELS, NORMS


def _distinct_models() -> list[str]:
    """One name per distinct tiny build (aliases and arch presets sharing a ``tiny`` are one)."""
    seen, names = set(), []
    for n in MODELS.names():
        tiny = getattr(MODELS.get(n), "tiny", None)
        if tiny is not None and id(tiny) not in seen:
            seen.add(id(tiny))
            names.append(n)
    return names


MODEL_NAMES = _distinct_models()


def _tiny(name):
    kw = dict(MODELS.get(name).tiny)
    return kw.pop("input_shape"), kw


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_trains_one_step(name):
    shape, kw = _tiny(name)
    model = MODELS.get(name)(num_classes=3, **kw)
    tx = optax.sgd(0.01, momentum=0.9)
    state = train.init_state(model, tx, shape, 0)
    step = jax.jit(train.make_train_step(model, tx, lambda x, k: x, optax.constant_schedule(0.01)))
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.normal(size=(4, *shape)), jnp.float32),
             "label": jnp.asarray(rng.integers(0, 3, 4), jnp.int32)}
    state, m = step(state, batch)
    assert np.isfinite(float(m["train/loss"]))


def _fields(name):
    return MODELS.get(name).__dataclass_fields__


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_initialises_with_norms_and_inits(name):
    shape, kw = _tiny(name)
    fields = _fields(name)
    norms = ["batch", "group(groups=2)", "none"] if "norm" in fields else [None]
    inits = ["kaiming_normal", "orthogonal"] if "weight_init" in fields else [None]
    for norm in norms:
        for init in inits:
            if init and init not in INITS:
                continue
            extra = {k: v for k, v in (("norm", norm), ("weight_init", init)) if v}
            if norm and norm.split("(")[0] not in NORMS:
                continue
            model = MODELS.get(name)(num_classes=3, **kw, **extra)
            v = model.init(jax.random.PRNGKey(0), jnp.zeros((2, *shape)), train=False)
            assert jax.tree.leaves(v["params"])
