"""The training loop: one jitted, sharded train step for every model, norm and dataset.

``train_and_evaluate(config, workdir)`` builds data, model, optimizer and mesh from the config,
restores the newest intact checkpoint in ``workdir`` if there is one, and trains to
``total_steps``, logging every ``log_every_steps``, evaluating every ``eval_every_steps`` and
checkpointing every ``checkpoint_every_steps`` (and on SIGTERM / SIGINT); a non-finite loss or
gradient norm stops the run or skips the step (``docs/reliability.md``: the guarantees on
divergence, preemption and resume). Nothing here knows a specific model or layer:
every non-param collection is model state carried generically (see ``docs/INTERFACES.md``):

- ordinary collections (``batch_stats``, ...) are mutable in the training apply;
- ``backward_state`` is differentiated, and its cotangent becomes its new value (state written
  by a layer's backward pass, e.g. a normaliser's running gradient statistics);
- ``intermediates`` / ``perturbations`` are transient.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gnj import checkpoint, interrupts, models, optim, precision, sharding, validate
from gnj import data as data_lib
from gnj import workdir as workdir_lib
from gnj.metrics import MetricWriter
from gnj.registry import ANALYSES
from gnj.state import BACKWARD_STATE, TrainState, split_variables, stream_rngs

Batch = dict[str, jax.Array]


# ----------------------------------------------------------------------------- losses


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy with integer labels, computed in
    promote(logits dtype, float32): float64 stays float64, bfloat16/float16 go to float32."""
    dtype = jnp.promote_types(logits.dtype, jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(dtype), labels)


def mixup(x: jax.Array, labels: jax.Array, key: jax.Array, alpha: float):
    """Mixup (Zhang et al.) as in the references: one λ ~ Beta(α, α) per batch, a random pairing.

    Returns ``(mixed x, labels_a, labels_b, λ)``; the loss is λ·CE(a) + (1−λ)·CE(b).
    """
    lam_key, perm_key = jax.random.split(key)
    lam = jax.random.beta(lam_key, alpha, alpha)
    perm = jax.random.permutation(perm_key, x.shape[0])
    return lam * x + (1 - lam) * x[perm], labels, labels[perm], lam


# ----------------------------------------------------------------------------- steps


def make_train_step(model, tx: optax.GradientTransformation, preprocess: Callable,
                    lr_schedule: optax.Schedule, mixup_alpha: float = 0.0,
                    policy: precision.Precision = precision.FLOAT32, *,
                    skip_nonfinite: bool = False) -> Callable:
    """``step(state, batch) -> (state, metrics)``: one SGD step on the global batch, computing
    in ``policy.dtype`` (``gnj/precision.py``).

    ``metrics["train/nonfinite"]`` is 1 when the loss or the gradient norm is not finite. With
    ``skip_nonfinite`` such a step's update is not applied (params, model and optimizer state
    stay; the step counter advances, so the data order is unchanged), selected on device with
    ``jnp.where``: no host sync.
    """

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
                                            rngs=stream_rngs(model_key))
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
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        metrics = {"train/loss": loss, "train/accuracy": acc,
                   "train/lr": lr_schedule(state.step), "train/grad_norm": grad_norm,
                   "train/nonfinite": 1.0 - finite.astype(jnp.float32)}
        new = state.replace(step=state.step + 1, params=params, model_state=model_state,
                            opt_state=opt_state)
        if skip_nonfinite:
            kept = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
            new = kept.replace(step=state.step + 1)
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
    variables = model.init({"params": init_key, **stream_rngs(init_key)}, dummy, train=False)
    params, model_state = policy.store(split_variables(variables))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                      opt_state=tx.init(params), rng=train_key)


def total_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    if config.get("num_steps", 0) > 0:
        return int(config.num_steps)
    return int(round(config.num_epochs * steps_per_epoch))


def check_workdir(config: ml_collections.ConfigDict, workdir: str,
                  allow_config_change: bool = False) -> None:
    """Create ``workdir`` and record the config (``config.json``); refuse a workdir holding a
    run of another model or dataset, or (unless ``allow_config_change``) one whose recorded
    config differs in more than run controls (``gnj/workdir.py``). Only process 0 writes, so
    several processes of one run share the record."""
    workdir_lib.make_dirs(workdir)
    workdir_lib.record_config(config, workdir, allow_config_change,
                              writer=jax.process_index() == 0)


def train_time_analyses(config: ml_collections.ConfigDict, model, preprocess: Callable
                        ) -> list[tuple[int, Callable]]:
    """``(every_steps, hook(state, batch) -> scalars)`` of every train-time analysis the config
    switches on: each ``ANALYSES`` entry whose ``when`` is ``"train"`` names, in ``every``, the
    ``config.analysis`` key of its period (0 = off) and is built as
    ``entry(config, model, preprocess)`` (``gnj/analysis/hooks.py``)."""
    analysis = config.get("analysis", {}) or {}
    hooks: list[tuple[int, Callable]] = []
    for name in ANALYSES.names():
        entry = ANALYSES.get(name)
        if getattr(entry, "when", None) != "train":
            continue
        every = int(analysis.get(entry.every, 0))
        if every > 0:
            hooks.append((every, entry(config, model, preprocess)))
    return hooks


# ----------------------------------------------------------------------------- the loop


@jax.jit
def _snapshot(tree: Any) -> Any:
    """``tree`` copied into fresh device buffers: a save can read it after the next step has
    been dispatched, which donates (overwrites) the originals. Costs one state's memory while
    a periodic save is pending."""
    return jax.tree.map(jnp.copy, tree)


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    """Whether every floating-point value of ``tree`` is finite (one device scalar)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


FIRST_NONFINITE = "first_nonfinite_step"
"""Key of the loop's window carry: the first step of the window with a non-finite loss or
gradient norm (``NO_STEP`` if none). Kept out of the metric records."""
NO_STEP = int(np.iinfo(np.int32).max)


def make_accumulating_step(train_step: Callable) -> Callable:
    """``step(state, sums, batch) -> (state, sums + metrics)``: the loop's one dispatch per step.

    The step metrics are summed on device inside the same executable, so the loop neither syncs
    with the device nor dispatches a second computation between logs (a separate jitted
    accumulation cost ~4 ms per 18 ms step here: it breaks the step pipeline). ``sums`` also
    carries ``FIRST_NONFINITE``, the first diverged step of the window (a minimum, not a sum).
    """

    def step(state: TrainState, sums: dict[str, jax.Array], batch: Batch):
        number = state.step + 1
        state, metrics = train_step(state, batch)
        new = {k: sums[k] + v for k, v in metrics.items()}
        bad = metrics["train/nonfinite"] > 0
        new[FIRST_NONFINITE] = jnp.minimum(sums[FIRST_NONFINITE],
                                           jnp.where(bad, number, NO_STEP).astype(jnp.int32))
        return state, new

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

    Every check on the config runs here, before anything is written to the workdir or compiled:
    the declared domains and registry specs (``validate.check``), batch divisibility, dataset
    availability, and the model's shapes (traced abstractly). See ``docs/reliability.md``.
    """
    validate.check(config)
    source = data_lib.build(config)
    model = models.build(config.model, source.num_classes)
    policy = precision.from_config(config.model)
    steps = total_steps(config, source.steps_per_epoch)
    tx, lr_schedule = optim.build(config.optim, source.steps_per_epoch, steps)
    mesh = sharding.make_mesh()
    rep, bat = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    init = functools.partial(init_state, model, tx, source.input_shape, config.seed, policy)
    validate.abstract_init(init, config.model)  # shape errors now, before any compile
    state = jax.jit(init, out_shardings=rep)()
    if config.get("pretrained", ""):  # torchvision-format weights from a local .pth file
        from gnj.interop import torchvision as pretrained

        state = pretrained.apply_to_state(state, config)
    step = make_train_step(model, tx, source.preprocess, lr_schedule,
                           config.get("mixup_alpha", 0.0),
                           skip_nonfinite=config.get("on_nonfinite", "stop") == "skip",
                           policy=policy)
    train_step = jax.jit(step, in_shardings=(rep, bat), out_shardings=(rep, rep),
                         donate_argnums=0)
    accumulating_step = jax.jit(make_accumulating_step(step), in_shardings=(rep, rep, bat),
                                out_shardings=(rep, rep), donate_argnums=(0, 1))
    eval_step = jax.jit(make_eval_step(model, source.preprocess, policy), in_shardings=(rep, bat),
                        out_shardings=rep)
    return Experiment(config, source, model, mesh, steps, lr_schedule, state, train_step,
                      eval_step, accumulating_step)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, multihost: bool = False,
                       allow_config_change: bool = False) -> dict[str, float]:
    """Train ``config`` in ``workdir`` (resuming if it has a checkpoint); final eval metrics.

    Holds the workdir's lock for the run (none with ``multihost``: the processes are one run).

    Raises:
      interrupts.Diverged: a non-finite loss or gradient norm (``on_nonfinite="stop"``).
      interrupts.Preempted: SIGTERM / SIGINT; the checkpoint of the current step was saved.
      checkpoint.CheckpointSaveError: a save failed (e.g. disk full).
      workdir.WorkdirError: the workdir is another process's, another run's, or damaged.
    """
    exp = build_experiment(config)
    with workdir_lib.lock(workdir, shared=multihost):
        check_workdir(config, workdir, allow_config_change)
        return _train(exp, workdir)


class _NonFinite(Exception):
    def __init__(self, step: int):
        self.step = step


def _host_window(sums: Any, count: int, pending: bool) -> dict[str, Any]:
    """The unlogged metric window saved with a checkpoint: exact float32 sums as JSON."""
    values = jax.device_get(sums)
    return {"count": count, "pending": pending,
            "sums": {k: np.asarray(v).item() for k, v in values.items()}}


def _train(exp: Experiment, workdir: str) -> dict[str, float]:
    config, source, mesh, steps, state = exp.config, exp.source, exp.mesh, exp.total_steps, \
        exp.state
    ckpt = checkpoint.manager(workdir, config.checkpoint_every_steps, config.keep_checkpoints,
                              async_save=config.get("async_checkpointing", True))
    restored = ckpt.restore_latest(state)
    start, resumed = 0, None
    if restored is not None:
        state, start = restored
        resumed = ckpt.window(start)
        print(f"resumed from checkpoint at step {start} in {workdir}", flush=True)
    elif config.get("restore_from", ""):
        state = checkpoint.restore_variables_into(state, config.restore_from)
        print(f"initialised from checkpoint {config.restore_from}", flush=True)
    step_fn, evaluate = exp.accumulating_step, exp.evaluate
    hooks = train_time_analyses(config, exp.model, source.preprocess)
    writer = MetricWriter(workdir, start, steps, quiet=config.get("quiet", False))
    skip = config.get("on_nonfinite", "stop") == "skip"

    def host_batches():
        for _, local in zip(range(start, steps), source.train_batches(start)):
            yield sharding.global_batch(local, mesh)

    log_every, eval_every = config.log_every_steps, config.eval_every_steps
    save_every = config.checkpoint_every_steps
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
        values = jax.device_get(window) if window is not None else {}
        first = int(values.pop(FIRST_NONFINITE, NO_STEP))
        record = {k: v / count for k, v in values.items()} if count else {}
        record.update(extra)
        if evaluated is not None:
            record.update(evaluated)
            final = {**final, **record}
        writer.write(step, record, eval_seconds=eval_seconds)
        if first != NO_STEP and not skip:
            raise _NonFinite(first)

    def checked_save(step: int, snap: Any, window: dict[str, Any]) -> None:
        """Save ``snap`` (the state after ``step``) unless it or its window is not finite."""
        first = window["sums"].get(FIRST_NONFINITE, NO_STEP)
        if first != NO_STEP and not skip:
            raise _NonFinite(first)
        if not bool(_all_finite(snap)):
            raise _NonFinite(step)
        ckpt.save(step, snap, window=window, force=True)

    def step_events(done: int, batch_sums: Any, count: int, state: TrainState) -> None:
        """Evaluation and the metric record due at step ``done`` (deferred where possible)."""
        evaluated, eval_seconds = None, 0.0
        if done % eval_every == 0 or done == steps:
            run_deferred()
            jax.block_until_ready(state)  # queued training steps are not eval time
            t_eval = time.perf_counter()
            evaluated = evaluate(state)
            eval_seconds = time.perf_counter() - t_eval
        if is_log_step(done):
            deferred.append(functools.partial(log, done, batch_sums, count, probed, evaluated,
                                              eval_seconds))
        elif evaluated is not None:  # an eval step that is not a log step: its own record
            deferred.append(functools.partial(log, done, None, 0, {}, evaluated, eval_seconds))

    def is_log_step(done: int) -> bool:
        return done % log_every == 0 or done == steps

    def is_event_step(done: int) -> bool:
        return is_log_step(done) or done % eval_every == 0

    try:
        with interrupts.StopRequests() as stop:
            for s, batch in zip(range(start, steps), data_lib.pipeline.prefetch(host_batches())):
                if zeros is None:
                    zeros = {**zero_sums(exp.train_step, state, batch),
                             FIRST_NONFINITE: np.int32(NO_STEP)}
                    sums = zeros
                    if resumed is not None and set(resumed["sums"]) == set(zeros):
                        sums = {k: np.asarray(v, zeros[k].dtype)
                                for k, v in resumed["sums"].items()}
                        n_acc = resumed["count"]
                        if resumed.get("pending") and is_event_step(start):
                            step_events(start, sums, n_acc, state)  # owed by a preempted run
                            if start % log_every == 0:
                                sums, n_acc = zeros, 0
                state, sums = step_fn(state, sums, batch)
                run_deferred()
                ckpt.check()  # a failed asynchronous save is reported at once
                n_acc += 1
                done = s + 1
                preempted = stop.requested and done < steps  # read once per step
                for every, hook in hooks:  # probe values join the next logged record
                    if done % every == 0:
                        probed.update(hook(state, batch))
                if preempted:
                    run_deferred()
                    window = _host_window(sums, n_acc, pending=is_event_step(done))
                    checked_save(done, state, window)
                    ckpt.close()
                    writer.close()
                    raise interrupts.Preempted(done, stop.signum)
                logged = is_log_step(done)
                step_events(done, sums, n_acc, state)
                if logged:
                    sums, n_acc, probed = zeros, 0, {}
                if done == steps:
                    run_deferred()
                    checked_save(done, state, _host_window(zeros, 0, pending=False))
                elif checkpoint.is_due(done, save_every):
                    snap, snap_sums = _snapshot((state, sums))
                    count = n_acc

                    def save_later(done=done, snap=snap, snap_sums=snap_sums, count=count):
                        checked_save(done, snap, _host_window(snap_sums, count, pending=False))

                    deferred.append(save_later)
            run_deferred()
    except BaseException as e:
        deferred.clear()
        if isinstance(e, interrupts.Preempted):
            raise
        if not isinstance(e, _NonFinite):  # a crash: let a save in flight finish, then raise
            with contextlib.suppress(Exception):
                ckpt.close()
            with contextlib.suppress(Exception):
                writer.close()
            raise
        writer.write_event(e.step, "diverged")
        ckpt.close()
        writer.close()
        good = ckpt.all_steps()
        raise interrupts.Diverged(e.step, max(good) if good else None) from None
    ckpt.close()
    writer.close()
    if not final:
        final = evaluate(state)
    return {k: float(v) for k, v in final.items() if not k.startswith("perf/")}
