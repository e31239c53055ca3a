"""2-D convolution as three JAX primitives that run oneDNN on CPU (XLA FFI), XLA elsewhere.

For channels-last x (N, H, W, C), a kernel w (KH, KW, C/G, O) in G groups and a fixed geometry
(strides, explicit paddings, kernel dilation), the convolution y = conv(x, w) is bilinear. Let
T(x, w, dy) = ⟨dy, conv(x, w)⟩. The three primitives are its three partial derivatives:

    conv_p(x, w)          = y                       (forward)
    conv_dgrad_p(dy, w)   = ∂T/∂x = conv(·, w)ᵀ dy  (input gradient; oneDNN backward_data)
    conv_wgrad_p(x, dy)   = ∂T/∂w = conv(x, ·)ᵀ dy  (weight gradient; oneDNN backward_weights)

Each is bilinear, so its JVP is ``p(da, b) + p(a, db)`` (``ad.defbilinear``), and each one's
transposes are the other two, read off T: conv_p transposes to dgrad (w.r.t. x) and wgrad
(w.r.t. w); dgrad to conv_p (w.r.t. dy) and wgrad (w.r.t. w); wgrad to dgrad (w.r.t. x) and
conv_p (w.r.t. dy). So ``grad``, ``jvp``, ``jacfwd``, ``jacrev``, ``linearize`` +
``linear_transpose`` all stay inside the three primitives, to any order.

Batching (``vmap``): when only the activation operand (x of conv_p, dy of dgrad) is mapped,
the mapped axis is folded into the batch N, one oneDNN call; every other case (a mapped
kernel, a mapped weight-gradient operand) runs the primitive once per mapped index in a
``lax.map``: the same numbers, sequentially.

Lowering: on CPU, an FFI call into ``onednn_conv.cc`` (:mod:`gnj.nn.onednn_kernel`), when the
library is available, the dtype is float32, oneDNN accepts the geometry, and the computation
is not partitioned over several devices (a custom call is opaque to XLA's SPMD partitioner,
which would gather the sharded batch onto every device for it; under ``shard_map`` with every
mesh axis manual, it is per-device code and oneDNN runs). Otherwise the primitive lowers to
XLA's own convolution (``lax.conv_general_dilated`` and its transposes), so a bound primitive
never fails to compile.

:func:`conv` is the entry point used by ``gnj/nn/conv.py``; :func:`resolve_impl` decides, when
a conv is traced, between this path and plain ``lax.conv_general_dilated``: ``auto`` (default)
takes oneDNN on the CPU backend for float32 when the library is available;
``$GNJ_CONV_IMPL=xla`` / ``onednn`` (or :func:`use_impl`) force a path. Measured speed and the
threading are in docs/performance.md.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax._src import core as jax_core
from jax._src import dispatch, sharding_impls
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
from jax.sharding import PartitionSpec

from gnj.nn import onednn_kernel as kernel
from gnj.nn.impl_switch import ImplSwitch

IMPL_ENV = "GNJ_CONV_IMPL"
IMPLS = ("auto", "xla", "onednn")
DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

Pads = tuple[tuple[int, int], tuple[int, int]]


# ------------------------------------------------------------------------------------------------
# Choosing the path


_SWITCH = ImplSwitch("convolution implementation", IMPL_ENV, IMPLS)
#: The innermost :func:`use_impl`, else ``$GNJ_CONV_IMPL``, else ``auto``.
requested_impl = _SWITCH.requested
#: ``with use_impl("auto" | "xla" | "onednn"):`` traces convolutions with that path.
use_impl = _SWITCH.use


def resolve_impl(dtype) -> str:
    """``onednn`` or ``xla`` for a conv of this dtype traced now.

    ``auto``: oneDNN when the default backend is CPU, the dtype float32 and the library
    available (else XLA; one warning if the library failed). ``onednn``: oneDNN for float32
    (other dtypes use XLA), raising if the library is unavailable.
    """
    impl = requested_impl()
    if impl == "xla" or not kernel.supports_dtype(dtype):
        return "xla"
    if impl == "onednn":
        if not kernel.available():
            raise RuntimeError(f"{IMPL_ENV}=onednn was asked for, but the oneDNN convolution "
                               f"kernel is not available (see the warning; {kernel.INSTALL_HINT})")
        return "onednn"
    return "onednn" if jax.default_backend() == "cpu" and kernel.available() else "xla"


# ------------------------------------------------------------------------------------------------
# Geometry


def output_shape(x_shape: Sequence[int], w_shape: Sequence[int], strides: Sequence[int],
                 padding: Pads, dilation: Sequence[int]) -> tuple[int, int, int, int]:
    """(N, OH, OW, O): OH = ⌊(H + p_top + p_bottom − ((KH − 1)·d_h + 1)) / s_h⌋ + 1, same for W."""
    spatial = tuple((x_shape[1 + d] + sum(padding[d]) - ((w_shape[d] - 1) * dilation[d] + 1))
                    // strides[d] + 1 for d in range(2))
    return (x_shape[0], *spatial, w_shape[-1])


#: Convs of fewer multiply-adds than this run on one thread (docs/performance.md, "Threads").
SINGLE_THREAD_MACS = 2_000_000


def threads(x_shape, w_shape, strides, padding, dilation) -> int:
    """OpenMP threads for a conv: 1 below :data:`SINGLE_THREAD_MACS` multiply-adds, else 0
    (OpenMP's default: ``$OMP_NUM_THREADS`` or the usable cores)."""
    n, oh, ow, o = output_shape(x_shape, w_shape, strides, padding, dilation)
    macs = n * oh * ow * o * w_shape[0] * w_shape[1] * w_shape[2]
    return 1 if macs < SINGLE_THREAD_MACS else 0


def _attr(x_shape, w_shape, strides, padding, dilation, groups) -> tuple[int, ...]:
    """The kernel's ``conv`` attribute: strides, pads (top, bottom, left, right), dilation,
    groups, threads."""
    (pt, pb), (pl, pr) = padding
    return (*strides, pt, pb, pl, pr, *dilation, groups,
            threads(x_shape, w_shape, strides, padding, dilation))


def _plans_ok(x_shape, w_shape, dtype, pass_, strides, padding, dilation, groups) -> bool:
    y_shape = output_shape(x_shape, w_shape, strides, padding, dilation)
    conv = _attr(x_shape, w_shape, strides, padding, dilation, groups)
    return kernel.plan(tuple(x_shape), tuple(w_shape), y_shape, conv, pass_,
                       jnp.dtype(dtype).name)[0]


def covered(x_shape, w_shape, dtype, strides, padding, dilation, groups) -> bool:
    """Whether oneDNN takes this conv in all three passes (creating and caching the primitives)."""
    if len(x_shape) != 4 or len(w_shape) != 4 or min(*x_shape, *w_shape) < 1:
        return False
    if any(p < 0 for pair in padding for p in pair) or min(*strides, *dilation) < 1:
        return False
    if min(output_shape(x_shape, w_shape, strides, padding, dilation)) < 1:
        return False
    return all(_plans_ok(x_shape, w_shape, dtype, p, strides, padding, dilation, groups)
               for p in kernel.PASSES)


# ------------------------------------------------------------------------------------------------
# XLA's formulation of each primitive (lowering off oneDNN, and the reference in tests)


def xla_conv(x, w, *, strides, padding, dilation, groups):
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=DIMENSION_NUMBERS,
                                    feature_group_count=groups)


def xla_dgrad(dy, w, *, lhs_shape, strides, padding, dilation, groups):
    f = functools.partial(xla_conv, w=w, strides=strides, padding=padding, dilation=dilation,
                          groups=groups)
    return jax.linear_transpose(f, jax.ShapeDtypeStruct(lhs_shape, dy.dtype))(dy)[0]


def xla_wgrad(x, dy, *, rhs_shape, strides, padding, dilation, groups):
    f = lambda w: xla_conv(x, w, strides=strides, padding=padding, dilation=dilation,
                           groups=groups)
    return jax.linear_transpose(f, jax.ShapeDtypeStruct(rhs_shape, dy.dtype))(dy)[0]


# ------------------------------------------------------------------------------------------------
# Primitives

conv_p = Primitive("gnj_onednn_conv")
conv_dgrad_p = Primitive("gnj_onednn_conv_dgrad")
conv_wgrad_p = Primitive("gnj_onednn_conv_wgrad")
_PASS = {conv_p: "fwd", conv_dgrad_p: "bwd_data", conv_wgrad_p: "bwd_weights"}
_XLA = {conv_p: xla_conv, conv_dgrad_p: xla_dgrad, conv_wgrad_p: xla_wgrad}


def _out(aval, shape, batch_first: bool):
    """The result aval: ``aval``'s varying manual axes (under ``shard_map``), its sharding if
    the result is batch-first like it, else replicated."""
    sharding = aval.sharding if batch_first else aval.sharding.update(spec=PartitionSpec())
    return aval.update(shape=shape, weak_type=False, sharding=sharding)


def _conv_abstract(x, w, *, strides, padding, dilation, groups):
    return _out(x, output_shape(x.shape, w.shape, strides, padding, dilation), True)


def _dgrad_abstract(dy, w, *, lhs_shape, **_):
    return _out(dy, lhs_shape, True)


def _wgrad_abstract(x, dy, *, rhs_shape, **_):
    return _out(x, rhs_shape, False)


def _bind(prim, a, b, **params):
    """``prim.bind(a, b)`` after marking both operands varying over the same manual mesh axes
    (``shard_map``), as JAX's own binary primitives do: a kernel replicated over the mesh
    becomes per-device, and its gradient is summed over the devices by that cast's transpose."""
    varying = jax.typeof(a).mat.varying | jax.typeof(b).mat.varying
    a, b = (jax_core.pvary(v, tuple(varying - jax.typeof(v).mat.varying)) for v in (a, b))
    return prim.bind(a, b, **params)


for _p, _abstract in ((conv_p, _conv_abstract), (conv_dgrad_p, _dgrad_abstract),
                      (conv_wgrad_p, _wgrad_abstract)):
    _p.def_impl(functools.partial(dispatch.apply_primitive, _p))
    _p.def_abstract_eval(_abstract)


def _geometry(params: dict) -> dict:
    return {k: params[k] for k in ("strides", "padding", "dilation", "groups")}


# Transposes, read off T(x, w, dy) = ⟨dy, conv(x, w)⟩ (module docstring).
def _conv_t_x(ct, x, w, **p):
    return _bind(conv_dgrad_p, ct, w, lhs_shape=x.aval.shape, **p)


def _conv_t_w(ct, x, w, **p):
    return _bind(conv_wgrad_p, x, ct, rhs_shape=w.aval.shape, **p)


def _dgrad_t_dy(ct, dy, w, *, lhs_shape, **p):
    return _bind(conv_p, ct, w, **p)


def _dgrad_t_w(ct, dy, w, *, lhs_shape, **p):
    return _bind(conv_wgrad_p, ct, dy, rhs_shape=w.aval.shape, **p)


def _wgrad_t_x(ct, x, dy, *, rhs_shape, **p):
    return _bind(conv_dgrad_p, dy, ct, lhs_shape=x.aval.shape, **p)


def _wgrad_t_dy(ct, x, dy, *, rhs_shape, **p):
    return _bind(conv_p, x, ct, **p)


ad.defbilinear(conv_p, _conv_t_x, _conv_t_w)
ad.defbilinear(conv_dgrad_p, _dgrad_t_dy, _dgrad_t_w)
ad.defbilinear(conv_wgrad_p, _wgrad_t_x, _wgrad_t_dy)


def _fold_rule(prim, args, dims, **params):
    """vmap: fold a mapped activation (conv_p's x, dgrad's dy) into N; else a ``lax.map``.

    (``dims`` entries are an axis or None for an unmapped operand.)
    """
    a, b = args
    da, db = dims
    if prim is not conv_wgrad_p and db is None:
        a = jnp.moveaxis(a, da, 0)
        k, n = a.shape[:2]
        if prim is conv_dgrad_p:
            params = {**params, "lhs_shape": (k * n, *params["lhs_shape"][1:])}
        out = _bind(prim, jnp.reshape(a, (k * n, *a.shape[2:])), b, **params)
        return jnp.reshape(out, (k, n, *out.shape[1:])), 0
    a = a if da is None else jnp.moveaxis(a, da, 0)
    b = b if db is None else jnp.moveaxis(b, db, 0)
    size = a.shape[0] if da is not None else b.shape[0]

    def one(i):
        return _bind(prim, a if da is None else a[i], b if db is None else b[i], **params)

    return lax.map(one, jnp.arange(size)), 0


for _p in _PASS:
    batching.primitive_batchers[_p] = functools.partial(_fold_rule, _p)


def _partitioned(ctx) -> bool:
    """Whether the module being lowered is partitioned over several devices by XLA's SPMD
    partitioner (not per-device code under a fully manual ``shard_map``)."""
    axis_ctx = ctx.module_context.axis_context
    if isinstance(axis_ctx, sharding_impls.ShardingContext):
        return axis_ctx.num_devices > 1
    if isinstance(axis_ctx, sharding_impls.SPMDAxisContext):
        auto = {name for name, size in axis_ctx.mesh.shape.items() if size > 1}
        return not auto <= set(axis_ctx.manual_axes)
    return False


def _cpu_lowering(prim, ctx, a, b, **params):
    pass_ = _PASS[prim]
    (a_aval, b_aval), (out_aval,) = ctx.avals_in, ctx.avals_out
    x_shape, w_shape = {
        "fwd": (a_aval.shape, b_aval.shape),
        "bwd_data": (out_aval.shape, b_aval.shape),
        "bwd_weights": (a_aval.shape, out_aval.shape),
    }[pass_]
    geometry = _geometry(params)
    use_onednn = (kernel.supports_dtype(out_aval.dtype) and not _partitioned(ctx)
                  and kernel.available()
                  and covered(x_shape, w_shape, out_aval.dtype, geometry["strides"],
                              geometry["padding"], geometry["dilation"], geometry["groups"]))
    if not use_onednn:
        return mlir.lower_fun(functools.partial(_XLA[prim], **params),
                              multiple_results=False)(ctx, a, b)
    return jax.ffi.ffi_lowering(kernel.TARGETS[pass_][0])(
        ctx, a, b, conv=np.asarray(_attr(x_shape, w_shape, **geometry), np.int64))


for _p in _PASS:
    mlir.register_lowering(_p, mlir.lower_fun(_XLA[_p], multiple_results=False))
    mlir.register_lowering(_p, functools.partial(_cpu_lowering, _p), platform="cpu")


# ------------------------------------------------------------------------------------------------
# Entry point


def conv(x: jax.Array, w: jax.Array, strides: Sequence[int], padding: Pads,
         dilation: Sequence[int] = (1, 1), groups: int = 1) -> jax.Array:
    """y = conv_p(x, w): NHWC x, (KH, KW, C/G, O) w, explicit ((top, bottom), (left, right))."""
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _bind(conv_p, x, w, strides=tuple(int(s) for s in strides), padding=padding,
                       dilation=tuple(int(d) for d in dilation), groups=int(groups))
