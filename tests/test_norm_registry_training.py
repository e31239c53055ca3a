"""Every registered norm inside a small CIFAR ResNet and a small VGG trains one step on 8 fake
devices with a finite loss (the registry-wide norm test of the normalization zoo)."""

import json

import pytest

from tests.conftest import run_python

# Options that make a norm fit the tiny widths used here (4 / 8 channels, batch 16).
SPEC_FOR_TINY = {
    "group": "group(groups=2)",
    "gn": "group(groups=2)",
    "evonorm_s0": "evonorm_s0(groups=2)",
    "ghost_batch": "ghost_batch(size=4)",
}

_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from gnj import models, optim, sharding, train
from gnj.registry import MODELS, NORMS
from configs import default

spec_for = json.loads(sys.argv[1])
mesh = sharding.make_mesh()
rep, bat = sharding.replicated(mesh), sharding.batch_sharded(mesh)
cfg = default.get_config()
tx, sched = optim.build(cfg.optim, 10, 10)
archs = {"resnet_cifar": dict(name="resnet_cifar", depth=8, width=4)}
if "vgg" in MODELS:
    archs["vgg"] = dict(name="vgg", cfg=(8, (8, 2), 8))
seen, out = set(), {}
for name in NORMS.names():
    entry = NORMS.get(name)
    if id(entry) in seen:
        continue
    seen.add(id(entry))
    spec = spec_for.get(name, name)
    for arch, mcfg in archs.items():
        model = models.build({**mcfg, "norm": spec}, 10)
        state = jax.jit(lambda: train.init_state(model, tx, (8, 8, 3), 0), out_shardings=rep)()
        step = jax.jit(train.make_train_step(model, tx, lambda x, k: x, sched),
                       in_shardings=(rep, bat), out_shardings=(rep, rep))
        rng = np.random.default_rng(0)
        b = {"image": rng.normal(size=(16, 8, 8, 3)).astype(np.float32),
             "label": rng.integers(0, 10, 16).astype(np.int32)}
        state, m = step(state, sharding.global_batch(b, mesh))
        state, m2 = step(state, sharding.global_batch(b, mesh))
        out[f"{arch}/{spec}"] = [float(m["train/loss"]), float(m2["train/loss"])]
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow  # end-to-end run: make test-all
def test_every_norm_trains_in_resnet_and_vgg_on_8_devices():
    proc = run_python(["-c", _SCRIPT, json.dumps(SPEC_FOR_TINY)], devices=8)
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert any(k.startswith("resnet_cifar/batch") for k in result)
    for key, (first, second) in result.items():
        assert all(map(lambda v: v == v and abs(v) < 1e6, (first, second))), key
