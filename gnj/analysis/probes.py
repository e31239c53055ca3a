"""Per-layer activation and gradient probes of a training step, for any model
(docs/analysis.md#probes).

Probe points are found by interception (``flax.linen.intercept_methods``): every *conv* (a
``flax.linen.Conv`` subclass, or any module with ``kernel_size`` and ``features`` whose output
has spatial axes, e.g. the weight-reparametrised convs) and every *activation* (a module class
from ``gnj.nn.activations``, or one with ``is_activation = True``). Names are module paths.

After every activation, with a the (N, …, C) output, Mᵢ = vec(aᵢ)/‖vec(aᵢ)‖ and G = MMᵀ:

- ``act_var``: mean over channels of the unbiased per-channel variance over all other axes;
- ``cosine``: mean off-diagonal of G, (Σᵢⱼ Gᵢⱼ − tr G)/(N(N−1)), the mean cosine similarity
  of different samples;
- ``stable_rank``: tr(G)/λ_max(G) (a sample with an all-zero activation counts 0 in tr G).

After every conv, with y its output (N, H, W, C):

- ``std``: mean over channels of the unbiased per-channel std over (N, H, W);
- ``grad_norm``: ‖∂L/∂y‖_F over the whole batch, through a zero perturbation added to y.

For every parameter with ≥ 2 axes: ``grad_l2/<param path>`` = ‖∂L/∂W‖²_F.

L is the mean softmax cross-entropy of the logits against the integer labels (no mixup), in
training mode (batch statistics, RNG streams from the state); the model state updated by that
pass is discarded. :func:`build_probe` gives the train-time hook (``probes`` in
``gnj.analysis.core_hooks``, every ``config.analysis.probe_every_steps``); its keys are
``probe/<path>/<stat>`` and ``grad_l2/<param path>``, in forward (depth) order, which
``metrics.jsonl`` keeps and the gradient-norm figure (``gnj.analysis.figures``) colours by.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gnj.analysis.hooks import setting
from gnj.state import BACKWARD_STATE, TRANSIENT_COLLECTIONS, path_str, stream_rngs

_ACTIVATIONS_MODULE = "gnj.nn.activations"


def is_conv(module: nn.Module) -> bool:
    """A convolution-like module (its output is checked for spatial axes separately)."""
    if isinstance(module, (nn.Conv, nn.ConvTranspose, nn.ConvLocal)):
        return True
    ks = getattr(module, "kernel_size", None)
    return hasattr(module, "features") and ks is not None and ks != () and ks != []


def is_activation(module: nn.Module) -> bool:
    cls = type(module)
    return bool(getattr(cls, "is_activation", False)) or cls.__module__ == _ACTIVATIONS_MODULE


# ----------------------------------------------------------------------------- statistics


def channel_var(a: jax.Array) -> jax.Array:
    """Mean over channels (last axis) of the unbiased per-channel variance over the others."""
    return jnp.mean(jnp.var(jnp.reshape(a, (-1, a.shape[-1])), axis=0, ddof=1))


def gram_stats(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean off-diagonal cosine, stable rank tr G/λ_max G) of the per-sample Gram G = MMᵀ."""
    n = a.shape[0]
    m = jnp.reshape(a, (n, -1))
    norms = jnp.linalg.norm(m, axis=1, keepdims=True)
    m = m / jnp.where(norms > 0, norms, 1.0)
    with jax.default_matmul_precision("highest"):
        g = m @ m.T
    trace = jnp.trace(g)
    cosine = (jnp.sum(g) - trace) / (n * (n - 1))
    lam_max = jnp.linalg.eigvalsh(g)[-1]
    return cosine, trace / jnp.where(lam_max > 0, lam_max, 1.0)


def activation_stats(a: jax.Array) -> dict[str, jax.Array]:
    """``act_var``, ``cosine`` and ``stable_rank`` of one (N, …, C) activation tensor."""
    cosine, stable_rank = gram_stats(a)
    return {"act_var": channel_var(a), "cosine": cosine, "stable_rank": stable_rank}


def conv_std(y: jax.Array) -> jax.Array:
    """Mean over channels of the unbiased per-channel std over all other axes."""
    return jnp.mean(jnp.std(jnp.reshape(y, (-1, y.shape[-1])), axis=0, ddof=1))


# ------------------------------------------------------------------------- forward pass


class _Namer:
    def __init__(self):
        self.seen: dict[str, int] = {}

    def __call__(self, module: nn.Module) -> str:
        path = "/".join(str(p) for p in module.scope.path) if module.scope is not None else ""
        path = path or type(module).__name__
        k = self.seen.get(path, 0)
        self.seen[path] = k + 1
        return path if k == 0 else f"{path}#{k}"


def _forward(model: nn.Module, params: Any, state: dict[str, Any], eps: dict | None,
             x: jax.Array, labels: jax.Array, rngs: dict, train: bool,
             calls: list[str] | None = None
             ) -> tuple[jax.Array, dict[str, dict[str, jax.Array]]]:
    """Loss and the recorded {"conv": {name: y}, "act": {name: a}} of one forward pass.

    ``calls`` (if given) receives the path of every module call, in call order (at trace time).
    """
    records: dict[str, dict[str, jax.Array]] = {"conv": {}, "act": {}}
    namer = _Namer()

    def intercept(next_fun, args, kwargs, context):
        if calls is not None and context.method_name == "__call__":
            scope = context.module.scope
            calls.append("/".join(str(p) for p in scope.path) if scope is not None else "")
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__" or not isinstance(out, jax.Array):
            return out
        module = context.module
        if is_conv(module) and out.ndim >= 3:
            name = namer(module)
            if eps is not None and name in eps:
                out = out + eps[name]
            records["conv"][name] = out
        elif is_activation(module):
            records["act"][namer(module)] = out
        return out

    variables = {"params": params, **state}
    mutable = [k for k in state if k != BACKWARD_STATE] if train else []
    with nn.intercept_methods(intercept):
        out = model.apply(variables, x, train=train, mutable=mutable or False, rngs=rngs)
    logits = out[0] if mutable else out
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    return loss, records


def layer_probes(model: nn.Module, variables: Any, x: jax.Array, labels: jax.Array,
                 rngs: dict[str, jax.Array] | None = None, train: bool = True,
                 key_order: list[str] | None = None) -> dict[str, jax.Array]:
    """Every probe scalar (jittable) at Flax ``variables``, inputs ``x`` and integer ``labels``.

    Keys: ``probe/<activation>/{act_var,cosine,stable_rank}``, ``probe/<conv>/{std,grad_norm}``,
    ``grad_l2/<param path>`` and ``probe/loss``, each group in forward (depth) order; the
    ``grad_l2`` entries by the first call of the module owning the parameter. ``key_order``
    (if given) receives that key order (a ``jit`` returns dicts with sorted keys).
    """
    variables = dict(variables)
    params = variables.pop("params")
    state = {k: v for k, v in variables.items() if k not in TRANSIENT_COLLECTIONS}
    rngs = {} if rngs is None else rngs
    calls: list[str] = []
    fwd = functools.partial(_forward, model, x=x, labels=labels, rngs=rngs, train=train,
                            calls=calls)
    shapes = jax.eval_shape(lambda p: fwd(p, state, None)[1]["conv"], params)
    eps = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def loss_fn(p, e):
        return fwd(p, state, e)

    (loss, records), (g_params, g_eps) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(params, eps)
    first_call: dict[str, int] = {}
    for i, path in enumerate(calls):
        first_call.setdefault(path, i)

    def depth(name: str) -> tuple[int, int]:  # "path" or "path#k" (k-th extra call)
        path, _, k = name.partition("#")
        return first_call.get(path, len(calls)), int(k or 0)

    out: dict[str, jax.Array] = {"probe/loss": loss}
    for name in sorted(records["act"], key=depth):  # the aux dicts come back key-sorted
        for stat, v in activation_stats(records["act"][name]).items():
            out[f"probe/{name}/{stat}"] = v
    for name in sorted(records["conv"], key=depth):
        out[f"probe/{name}/std"] = conv_std(records["conv"][name])
        out[f"probe/{name}/grad_norm"] = jnp.linalg.norm(jnp.reshape(g_eps[name], (-1,)))
    grads = []
    for path, g in jax.tree_util.tree_flatten_with_path(g_params)[0]:
        if g.ndim >= 2:
            key = path_str(path)
            grads.append((first_call.get(key.rpartition("/")[0], len(calls)), key, g))
    for _, key, g in sorted(grads, key=lambda t: t[0]):  # stable: ties keep tree order
        out[f"grad_l2/{key}"] = jnp.sum(jnp.square(g))
    if key_order is not None:
        key_order[:] = list(out)
    return out


def _default_preprocess(x: jax.Array) -> jax.Array:
    if jnp.issubdtype(x.dtype, jnp.integer):
        return x.astype(jnp.float32) / 255.0
    return x.astype(jnp.float32)


def build_probe(config: Any, model: nn.Module,
                preprocess: Callable[[jax.Array, Any], jax.Array] | None = None
                ) -> Callable[[Any, dict[str, Any]], dict[str, float]]:
    """``probe(state, batch) -> {"probe/<path>/<stat>": float}`` for the training loop.

    ``state`` is a :class:`gnj.state.TrainState`, ``batch`` ``{"image", "label"}``.
    ``preprocess(images, None)`` (the data source's, without augmentation) maps raw images to
    model inputs; without it, integer images are scaled to [0, 1] (not mean/std-normalised).
    ``config.analysis.probe_max_examples`` (0 = all) caps the examples probed.
    """
    cap = int(setting(config, "probe_max_examples"))
    prep = (lambda x: preprocess(x, None)) if preprocess is not None else _default_preprocess
    order: list[str] = []  # filled when ``run`` is traced: keys in depth order

    @jax.jit
    def run(params, model_state, rng, step, image, label):
        x = prep(image)
        if cap > 0:
            x, label = x[:cap], label[:cap]
        variables = {"params": params, **model_state}
        return layer_probes(model, variables, x, label,
                            stream_rngs(jax.random.fold_in(rng, step)), train=True,
                            key_order=order)

    def probe(state: Any, batch: dict[str, Any]) -> dict[str, jax.Array]:
        """Queued on the device like the train step: the values are read when the record that
        holds them is written (``MetricWriter``), not here."""
        out = run(state.params, state.model_state, state.rng, state.step, batch["image"],
                  batch["label"])
        keys = order if set(order) == set(out) else sorted(out)
        return {k: out[k] for k in keys}

    return probe
