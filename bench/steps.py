"""gnj's jitted train step as the benchmark cases time it (shared by ``bench/run.py``,
``bench/scale.py`` and ``bench/profile_step.py``)."""

from __future__ import annotations

import time

from bench.common import compiled_stats


def gnj_step(model, shape: tuple[int, ...], lr: float = 0.1, policy=None):
    """(run, flops, xla MB, compile + first-step seconds) of gnj's jitted, donated step
    (``policy``: a ``gnj.precision.Precision``, float32 when None)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from gnj import precision, train

    policy = policy or precision.FLOAT32
    tx = optax.sgd(lr, momentum=0.9)
    state = train.init_state(model, tx, shape[1:], 0, policy)
    step = jax.jit(train.make_train_step(model, tx, lambda x, k: x, optax.constant_schedule(lr),
                                         0.0, policy), donate_argnums=0)
    rng = np.random.default_rng(0)
    b = {"image": jnp.asarray(rng.normal(size=shape), jnp.float32),
         "label": jnp.asarray(rng.integers(0, 10, shape[0]), jnp.int32)}
    jax.block_until_ready((state, b))
    t0 = time.perf_counter()
    flops, mem, compiled = compiled_stats(step, state, b)
    state, m = compiled(state, b)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    holder = {"s": state}

    def run():
        holder["s"], m = compiled(holder["s"], b)
        m["train/loss"].block_until_ready()

    return run, flops, mem, compile_s
