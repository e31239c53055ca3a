"""The training loop: one jitted, sharded train step for every model, norm and dataset.

``train_and_evaluate(config, workdir)`` builds data, model, optimizer and mesh from the config,
restores the latest checkpoint in ``workdir`` if there is one, and trains to ``total_steps``,
logging every ``log_every_steps``, evaluating every ``eval_every_steps`` and checkpointing every
``checkpoint_every_steps`` (and on SIGTERM). Nothing here knows a specific model or layer:
every non-param collection is model state carried generically (see ``docs/INTERFACES.md``):

- ordinary collections (``batch_stats``, ...) are mutable in the training apply;
- ``backward_state`` is differentiated, and its cotangent becomes its new value (state written
  by a layer's backward pass, e.g. Online Normalization's u and v);
- ``intermediates`` / ``perturbations`` are transient.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gnj import checkpoint, models, optim, precision, sharding
from gnj import data as data_lib
from gnj.metrics import MetricWriter
from gnj.state import BACKWARD_STATE, RNG_STREAMS, TrainState, split_variables

Batch = dict[str, jax.Array]


# ----------------------------------------------------------------------------- losses


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def mixup(x: jax.Array, labels: jax.Array, key: jax.Array, alpha: float):
    """Mixup (Zhang et al.) as in the references: one λ ~ Beta(α, α) per batch, a random pairing.

    Returns ``(mixed x, labels_a, labels_b, λ)``; the loss is λ·CE(a) + (1−λ)·CE(b).
    """
    lam_key, perm_key = jax.random.split(key)
    lam = jax.random.beta(lam_key, alpha, alpha)
    perm = jax.random.permutation(perm_key, x.shape[0])
    return lam * x + (1 - lam) * x[perm], labels, labels[perm], lam


# ----------------------------------------------------------------------------- steps


def _rngs(key: jax.Array) -> dict[str, jax.Array]:
    return dict(zip(RNG_STREAMS, jax.random.split(key, len(RNG_STREAMS))))


def make_train_step(model, tx: optax.GradientTransformation, preprocess: Callable,
                    lr_schedule: optax.Schedule, mixup_alpha: float = 0.0,
                    policy: precision.Precision = precision.FLOAT32) -> Callable:
    """``step(state, batch) -> (state, metrics)``: one SGD step on the global batch, computing
    in ``policy.dtype`` (``gnj/precision.py``)."""

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(state.rng, state.step)
        aug_key, mix_key, model_key = jax.random.split(key, 3)
        x = preprocess(_wide_input(batch["image"], policy), aug_key)
        labels_a = labels_b = batch["label"]
        lam = jnp.float32(1.0)
        if mixup_alpha > 0:
            x, labels_a, labels_b, lam = mixup(x, batch["label"], mix_key, mixup_alpha)
        x = x.astype(policy.dtype)

        carried = {k: v for k, v in state.model_state.items() if k != BACKWARD_STATE}
        backward = state.model_state.get(BACKWARD_STATE, {})

        def loss_fn(params, backward_state):
            variables = {"params": policy.compute(params), **carried}
            if backward_state:
                variables[BACKWARD_STATE] = backward_state
            logits, new_state = model.apply(variables, x, train=True, mutable=list(carried),
                                            rngs=_rngs(model_key))
            ce = lam * cross_entropy(logits, labels_a) + (1 - lam) * cross_entropy(logits, labels_b)
            return jnp.mean(ce), (logits, new_state)

        (loss, (logits, new_state)), (grads, new_backward) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True)(state.params, backward)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        model_state = dict(new_state)
        if backward:
            model_state[BACKWARD_STATE] = new_backward
        pred = jnp.argmax(logits, -1)
        acc = lam * jnp.mean(pred == labels_a) + (1 - lam) * jnp.mean(pred == labels_b)
        metrics = {"train/loss": loss, "train/accuracy": acc,
                   "train/lr": lr_schedule(state.step), "train/grad_norm": optax.global_norm(grads)}
        new = state.replace(step=state.step + 1, params=params, model_state=model_state,
                            opt_state=opt_state)
        return new, metrics

    return step


def _wide_input(x: jax.Array, policy: precision.Precision) -> jax.Array:
    """Raw batch input for preprocessing: float64 under a float64 policy (preprocessing keeps a
    floating input's dtype), unchanged otherwise."""
    return x.astype(policy.wide) if policy.wide != jnp.float32 else x


def make_eval_step(model, preprocess: Callable,
                   policy: precision.Precision = precision.FLOAT32) -> Callable:
    """``eval_step(state, batch) -> sums`` of loss, correct predictions and count (masked)."""

    def eval_step(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
        x = preprocess(_wide_input(batch["image"], policy), None).astype(policy.dtype)
        variables = {**state.variables(), "params": policy.compute(state.params)}
        logits = model.apply(variables, x, train=False)
        mask = batch["mask"]
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        return {"loss": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
                "correct": jnp.sum(correct * mask), "count": jnp.sum(mask)}

    return eval_step


# ----------------------------------------------------------------------------- setup


def init_state(model, tx, input_shape: tuple[int, ...], seed: int,
               policy: precision.Precision = precision.FLOAT32) -> TrainState:
    """Initial state (params, model state, optimizer state) from ``seed``; pure, jittable.
    Floating variables are stored in ``policy.param_dtype``, and so is the optimizer state."""
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    dummy = jnp.zeros((1, *input_shape), jnp.float32)
    variables = model.init({"params": init_key, **_rngs(init_key)}, dummy, train=False)
    params, model_state = policy.store(split_variables(variables))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                      opt_state=tx.init(params), rng=train_key)


def total_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    if config.get("num_steps", 0) > 0:
        return int(config.num_steps)
    return int(round(config.num_epochs * steps_per_epoch))


IDENTITY_KEYS = ("model", "dataset.name")


def _identity(cfg: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key in IDENTITY_KEYS:
        value: Any = cfg
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        out[key] = value
    if isinstance(out["model"], dict):  # a run may resume in another precision
        out["model"] = {k: v for k, v in out["model"].items() if k not in precision.KEYS}
    return out


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Refuse a workdir that holds a run of a different model or dataset; write config.json."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    new = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if _identity(old) != _identity(new):
            raise ValueError(
                f"workdir {workdir!r} holds a run of a different model or dataset:\n"
                f"  there: {_identity(old)}\n  now:   {_identity(new)}\n"
                "Use another --workdir (nothing in this one was changed).")
    if jax.process_index() == 0:  # one writer when several processes share the workdir
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(new, f, indent=2, sort_keys=True)
        os.replace(tmp, path)


class _Preemption:
    """Turns SIGTERM into a flag the loop checks between steps (save, then exit)."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handler(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def _build_hooks(config, model, preprocess) -> list[tuple[int, Callable]]:
    """Periodic analysis hooks ``(every_steps, fn(state, batch) -> scalars)`` from the config."""
    analysis = config.get("analysis", {}) or {}
    hooks: list[tuple[int, Callable]] = []
    every = int(analysis.get("probe_every_steps", 0))
    if every > 0:
        from gnj.analysis import probes

        hooks.append((every, probes.build_probe(config, model, preprocess)))
    every = int(analysis.get("correlations_every_steps", 0))
    if every > 0:  # ConstNet weight correlations and Diversity (gnj/analysis/correlations.py)
        from gnj.analysis import correlations

        hooks.append((every, correlations.build_hook(config)))
    return hooks


# ----------------------------------------------------------------------------- the loop


@jax.jit
def _snapshot(tree: Any) -> Any:
    """``tree`` copied into fresh device buffers: a save can read it after the next step has
    been dispatched, which donates (overwrites) the originals. Costs one state's memory while
    a periodic save is pending."""
    return jax.tree.map(jnp.copy, tree)


def make_accumulating_step(train_step: Callable) -> Callable:
    """``step(state, sums, batch) -> (state, sums + metrics)``: the loop's one dispatch per step.

    The step metrics are summed on device inside the same executable, so the loop neither syncs
    with the device nor dispatches a second computation between logs (a separate jitted
    accumulation cost ~4 ms per 18 ms step here: it breaks the step pipeline).
    """

    def step(state: TrainState, sums: dict[str, jax.Array], batch: Batch):
        state, metrics = train_step(state, batch)
        return state, jax.tree.map(jnp.add, sums, metrics)

    return step


def zero_sums(step: Callable, state: TrainState, batch: Batch) -> dict[str, np.ndarray]:
    """Host zeros shaped like the metrics of ``step`` (a ``(state, batch)`` step), for summing;
    traced abstractly (``jax.eval_shape``), nothing runs."""
    _, metrics = jax.eval_shape(step, state, batch)
    return jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), metrics)


@dataclasses.dataclass
class Experiment:
    """Everything a run builds from its config, before the first step."""

    config: ml_collections.ConfigDict
    source: data_lib.DataSource
    model: Any
    mesh: Any
    total_steps: int
    lr_schedule: optax.Schedule
    state: TrainState
    train_step: Callable
    eval_step: Callable
    accumulating_step: Callable  # (state, sums, batch) -> (state, sums + metrics): the loop

    def evaluate(self, state: TrainState) -> dict[str, float]:
        """Loss and accuracy on the whole eval split (padding masked out)."""
        sums = None
        for b in self.source.eval_batches():
            out = self.eval_step(state, sharding.global_batch(b, self.mesh))
            sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
        sums = jax.device_get(sums)
        return {"eval/loss": float(sums["loss"] / sums["count"]),
                "eval/accuracy": float(sums["correct"] / sums["count"])}


def build_experiment(config: ml_collections.ConfigDict) -> Experiment:
    """Data, model, optimizer, mesh, initial state and the jitted steps of ``config``.

    Every check on the config (registry names, batch divisibility, dataset availability) runs
    here, before anything is written to the workdir.
    """
    sharding.check_batch_size(config.batch_size)
    sharding.check_batch_size(config.eval_batch_size, "eval_batch_size")
    source = data_lib.build(config)
    model = models.build(config.model, source.num_classes)
    policy = precision.from_config(config.model)
    steps = total_steps(config, source.steps_per_epoch)
    tx, lr_schedule = optim.build(config.optim, source.steps_per_epoch, steps)
    mesh = sharding.make_mesh()
    rep, bat = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    state = jax.jit(functools.partial(init_state, model, tx, source.input_shape, config.seed,
                                      policy), out_shardings=rep)()
    if config.get("pretrained", ""):  # torchvision-format weights from a local .pth file
        from gnj import pretrained

        state = pretrained.apply_to_state(state, config)
    step = make_train_step(model, tx, source.preprocess, lr_schedule,
                           config.get("mixup_alpha", 0.0), policy)
    train_step = jax.jit(step, in_shardings=(rep, bat), out_shardings=(rep, rep),
                         donate_argnums=0)
    accumulating_step = jax.jit(make_accumulating_step(step), in_shardings=(rep, rep, bat),
                                out_shardings=(rep, rep), donate_argnums=(0, 1))
    eval_step = jax.jit(make_eval_step(model, source.preprocess, policy), in_shardings=(rep, bat),
                        out_shardings=rep)
    return Experiment(config, source, model, mesh, steps, lr_schedule, state, train_step,
                      eval_step, accumulating_step)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Train ``config`` in ``workdir`` (resuming if it has a checkpoint); final eval metrics."""
    exp = build_experiment(config)
    check_workdir(config, workdir)
    source, mesh, steps, state = exp.source, exp.mesh, exp.total_steps, exp.state
    mngr = checkpoint.manager(workdir, config.checkpoint_every_steps, config.keep_checkpoints,
                              async_save=config.get("async_checkpointing", True))
    restored = checkpoint.restore_latest(mngr, state)
    start = 0
    if restored is not None:
        state, start = restored
        print(f"resumed from checkpoint at step {start} in {workdir}", flush=True)
    elif config.get("restore_from", ""):
        state = checkpoint.restore_variables_into(state, config.restore_from)
        print(f"initialised from checkpoint {config.restore_from}", flush=True)
    step_fn, evaluate = exp.accumulating_step, exp.evaluate
    hooks = _build_hooks(config, exp.model, source.preprocess)
    writer = MetricWriter(workdir, start, steps, quiet=config.get("quiet", False))

    def host_batches():
        for _, local in zip(range(start, steps), source.train_batches(start)):
            yield sharding.global_batch(local, mesh)

    log_every, eval_every = config.log_every_steps, config.eval_every_steps
    zeros = sums = None
    n_acc, final, probed = 0, {}, {}
    # Host work of step s (metric write, periodic save) runs once step s+1 is queued, so the
    # device computes while the host writes instead of idling behind a sync.
    deferred: list[Callable[[], None]] = []

    def run_deferred() -> None:
        while deferred:
            deferred.pop(0)()

    def log(step: int, window: Any, count: int, extra: dict[str, Any],
            evaluated: dict[str, float] | None, eval_seconds: float) -> None:
        nonlocal final
        record = {k: v / count for k, v in jax.device_get(window).items()}
        record.update(extra)
        if evaluated is not None:
            record.update(evaluated)
            final = record
        writer.write(step, record, eval_seconds=eval_seconds)

    with _Preemption() as preempt:
        for s, batch in zip(range(start, steps), data_lib.pipeline.prefetch(host_batches())):
            if zeros is None:
                zeros = sums = zero_sums(exp.train_step, state, batch)
            state, sums = step_fn(state, sums, batch)
            run_deferred()
            n_acc += 1
            done = s + 1
            preempted = preempt.requested  # read once: a signal may land mid-iteration
            for every, hook in hooks:  # probe values join the next logged record
                if done % every == 0:
                    probed.update(hook(state, batch))
            if done % log_every == 0 or done == steps:
                evaluated, eval_seconds = None, 0.0
                if done % eval_every == 0 or done == steps:
                    jax.block_until_ready(state)  # queued training steps are not eval time
                    t_eval = time.perf_counter()
                    evaluated = evaluate(state)
                    eval_seconds = time.perf_counter() - t_eval
                deferred.append(functools.partial(log, done, sums, n_acc, probed, evaluated,
                                                  eval_seconds))
                sums, n_acc, probed = zeros, 0, {}
            if done == steps or preempted:
                run_deferred()
                checkpoint.save(mngr, done, state, force=True)
            elif checkpoint.is_due(done, config.checkpoint_every_steps):
                deferred.append(functools.partial(checkpoint.save, mngr, done, _snapshot(state)))
            if preempted:
                print(f"SIGTERM: checkpoint saved at step {done}; exiting", flush=True)
                break
        run_deferred()
    mngr.wait_until_finished()
    mngr.close()
    writer.close()
    if not final:
        final = evaluate(state)
    return {k: float(v) for k, v in final.items()}
