"""Weight initializers, registered by name in ``gnj.registry.INITS``.

Every registered entry is a factory ``factory(gain=None, **kwargs) -> initializer`` where the
initializer has Flax's signature ``init(key, shape, dtype) -> array``. Kernels are Flax-shaped:
dense ``(in, out)``, conv ``(kh, kw, in/groups, out)``. ``gain=None`` means "the gain of the
layer's nonlinearity", which the model fills in from ``gnj.nn.activations.gain``.

Fans and gains follow PyTorch's ``nn.init`` conventions; the orthogonal family scales as
described in docs/references.md#orthogonal-inits. Besides the random inits there are
deterministic ones (averaging, ±identity taps) and per-layer *init strings* that pick one init
per conv from a character (docs/references.md#constant-init, docs/references.md#init-strings).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from gnj.registry import INITS

Initializer = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) of a Flax kernel: receptive field × input / output channels."""
    if len(shape) < 2:
        raise ValueError(f"fan of a kernel needs at least 2 dims, got shape {tuple(shape)}")
    receptive = math.prod(shape[:-2])
    return receptive * shape[-2], receptive * shape[-1]


def _resolve_gain(gain: float | None) -> float:
    return 1.0 if gain is None else float(gain)


def _fan_by_mode(init_name: str, mode: str) -> Callable[[int, int], int]:
    """``(fan_in, fan_out) -> fan`` for ``mode``; modes but fan_in / fan_out raise ValueError."""
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"{init_name} mode {mode!r}; valid: fan_in, fan_out")
    return (lambda fan_in, fan_out: fan_in) if mode == "fan_in" else (
        lambda fan_in, fan_out: fan_out)


def _random(distribution: str, scale: Callable[[int, int], float]) -> Initializer:
    """The initializer ``scale(fan_in, fan_out)·N(0, 1)`` (``"normal"``) or
    U(±scale(fan_in, fan_out)) (``"uniform"``) of the kernel's shape."""

    def init(key, shape, dtype=jnp.float32):
        s = scale(*fans(shape))
        if distribution == "normal":
            return s * jax.random.normal(key, shape, dtype)
        return jax.random.uniform(key, shape, dtype, -s, s)

    return init


@INITS.register("kaiming_normal")
def kaiming_normal(gain: float | None = None, mode: str = "fan_in") -> Initializer:
    """N(0, gain/√fan): ``mode`` is ``fan_in`` or ``fan_out`` (PyTorch ``kaiming_normal_``)."""
    fan = _fan_by_mode("kaiming_normal", mode)
    g = _resolve_gain(gain)
    return _random("normal", lambda fan_in, fan_out: g / math.sqrt(fan(fan_in, fan_out)))


@INITS.register("torch_default")
def torch_default(gain: float | None = None) -> Initializer:
    """PyTorch's default for ``nn.Linear``/``nn.Conv2d`` weights and biases: U(±1/√fan_in).

    (kaiming_uniform with a=√5 gives bound √6/√(6·fan_in) = 1/√fan_in.) ``gain`` is ignored:
    this is the framework default, not a gain-matched init.
    """
    del gain
    return _random("uniform", lambda fan_in, fan_out: 1.0 / math.sqrt(fan_in))


def torch_default_bias(fan_in: int) -> Initializer:
    """PyTorch's default bias init of a layer with the given fan_in: U(±1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


@INITS.register("zeros")
def zeros(gain: float | None = None) -> Initializer:
    """All zeros (e.g. a residual branch's last conv, so the block starts as the identity)."""
    del gain
    return jax.nn.initializers.zeros


@INITS.register("kaiming_uniform")
def kaiming_uniform(gain: float | None = None, mode: str = "fan_in") -> Initializer:
    """U(±gain·√3/√fan): the uniform with kaiming_normal's variance."""
    fan = _fan_by_mode("kaiming_uniform", mode)
    g = _resolve_gain(gain)
    return _random("uniform", lambda fan_in, fan_out: g * math.sqrt(3.0 / fan(fan_in, fan_out)))


@INITS.register("xavier_uniform")
def xavier_uniform(gain: float | None = None) -> Initializer:
    """U(±gain·√(6/(fan_in + fan_out))) (PyTorch ``xavier_uniform_``)."""
    g = _resolve_gain(gain)
    return _random("uniform", lambda fan_in, fan_out: g * math.sqrt(6.0 / (fan_in + fan_out)))


@INITS.register("xavier_normal")
def xavier_normal(gain: float | None = None) -> Initializer:
    """N(0, gain·√(2/(fan_in + fan_out))) (PyTorch ``xavier_normal_``)."""
    g = _resolve_gain(gain)
    return _random("normal", lambda fan_in, fan_out: g * math.sqrt(2.0 / (fan_in + fan_out)))


def _orthogonal_matrix(key: jax.Array, rows: int, cols: int, dtype) -> jax.Array:
    """rows×cols with orthonormal rows (rows ≤ cols) or columns: QR of a Gaussian, sign-fixed
    with sign(diag(R)) as PyTorch's ``orthogonal_`` does."""
    work = jnp.promote_types(dtype, jnp.float32)  # float64 kernels get a float64 QR
    a = jax.random.normal(key, (max(rows, cols), min(rows, cols)), work)
    q, r = jnp.linalg.qr(a)
    q = q * jnp.sign(jnp.diag(r))
    q = q if rows >= cols else q.T
    return q.astype(dtype)


@INITS.register("orthogonal")
def orthogonal(gain: float | None = None) -> Initializer:
    """gain × an orthogonal matrix of PyTorch's flattened shape (out, in·kh·kw); no 1/√fan
    factor (docs/references.md#orthogonal-inits)."""
    g = _resolve_gain(gain)

    def init(key, shape, dtype=jnp.float32):
        out = shape[-1]
        flat = _orthogonal_matrix(key, out, math.prod(shape[:-1]), dtype)  # (out, in·k·k)
        # PyTorch flattens (out, in, *spatial); Flax kernels are (*spatial, in, out).
        torch_shape = (out, shape[-2], *shape[:-2])
        perm = (*range(2, len(shape)), 1, 0)
        return g * jnp.transpose(jnp.reshape(flat, torch_shape), perm)

    return init


@INITS.register("delta_orthogonal")
def delta_orthogonal(gain: float | None = None) -> Initializer:
    """Zero kernel with an orthogonal centre tap, scaled by gain·√(out/in) (Xiao et al. 2018;
    docs/references.md#orthogonal-inits).

    The centre tap (index k//2 of every spatial dim) is the (in, out) corner of a dim×dim
    orthogonal matrix, dim = max(in, out) (drawing it from a scaled Gaussian and transposing it
    would change nothing in distribution). Dense kernels get the tap itself.
    """
    g = _resolve_gain(gain)

    def init(key, shape, dtype=jnp.float32):
        cin, out = shape[-2], shape[-1]
        dim = max(cin, out)
        q = _orthogonal_matrix(key, dim, dim, dtype)[:cin, :out]
        tap = g * math.sqrt(out / cin) * q
        if len(shape) == 2:
            return tap
        centre = tuple(k // 2 for k in shape[:-2])
        return jnp.zeros(shape, dtype).at[centre].set(tap)

    return init


@INITS.register("const_avg")
def const_avg(gain: float | None = None) -> Initializer:
    """The averaging kernel: zeros but the centre tap, 1/in_channels for every (in, out) pair, so
    each output is the channel mean of the input (docs/references.md#constant-init)."""
    del gain

    def init(key, shape, dtype=jnp.float32):
        cin = shape[-2]
        if len(shape) == 2:
            return jnp.full(shape, 1.0 / cin, dtype)
        kh, kw = shape[0], shape[1]
        return jnp.zeros(shape, dtype).at[kh // 2, kw // 2].set(1.0 / cin)

    return init


def fixup_scale(num_layers: int, m: int, variant: str = "original", p: float = 2.0) -> float:
    """Fixup's depth factor: ``original`` L^(−1/(2m−2)), ``ours`` L^(−1/(1.5(m−1))),
    i.e. −1/3 for bottlenecks (m=3) and −1/1.5 for basic blocks (m=2), ``cifar`` L^(−p/(2m))."""
    if num_layers < 1 or m < 2:
        raise ValueError(f"fixup: needs num_layers >= 1 residual branches and m >= 2 layers per "
                         f"branch, got num_layers={num_layers}, m={m}")
    if variant == "original":
        return num_layers ** (-1.0 / (2 * m - 2))
    if variant == "ours":
        return num_layers ** (-1.0 / (1.5 * (m - 1)))
    if variant == "cifar":
        return num_layers ** (-p / (2 * m))
    raise ValueError(f"fixup variant {variant!r}; valid: original, ours, cifar")


@INITS.register("fixup")
def fixup(gain: float | None = None, num_layers: int | None = None, m: int = 2,
          variant: str = "original", p: float = 2.0, num_blocks: int | None = None
          ) -> Initializer:
    """Fixup's residual-branch conv init (docs/references.md#fixup); L = ``num_blocks`` (or
    ``num_layers``) residual branches of ``m`` layers each.

    - ``original`` (Zhang et al. 2019): N(0, √(2/fan_out))·L^(−1/(2m−2)), i.e. ×L^(−1/4) for
      bottlenecks (m=3), ×L^(−1/2) for basic blocks (m=2);
    - ``ours``: N(0, √(2/fan_in))·L^(−1/(1.5(m−1))), i.e. ×L^(−1/3) (m=3), ×L^(−1/1.5) (m=2);
    - ``cifar``: kaiming fan_in with gain·L^(−p/(2m)), on both block convs (``gain`` = the
      activation's, filled in by the model).

    The branch's last conv (zero) and the downsample (:func:`fixup_downsample`) are separate.
    """
    if num_blocks is not None and num_layers is not None and num_blocks != num_layers:
        raise ValueError(f"fixup: num_blocks={num_blocks} and num_layers={num_layers} disagree; "
                         "give one of them")
    count = num_blocks if num_blocks is not None else num_layers
    if count is None:
        raise ValueError("fixup: needs num_blocks (L, the number of residual branches), e.g. "
                         "fixup(num_blocks=16, m=3)")
    factor = fixup_scale(count, m, variant, p)
    if variant == "cifar":
        return kaiming_normal(_resolve_gain(gain) * factor)
    return kaiming_normal(math.sqrt(2.0) * factor, mode="fan_out" if variant == "original"
                          else "fan_in")


@INITS.register("fixup_downsample")
def fixup_downsample(gain: float | None = None, variant: str = "original") -> Initializer:
    """The 1×1 downsample of a Fixup ResNet (docs/references.md#fixup): ``original``
    N(0, √(2/fan_out)), ``ours`` N(0, √(1/fan_in)). ``gain`` is ignored (fixed constants)."""
    del gain
    if variant == "original":
        return kaiming_normal(math.sqrt(2.0), mode="fan_out")
    if variant == "ours":
        return kaiming_normal(1.0, mode="fan_in")
    raise ValueError(f"fixup_downsample variant {variant!r}; valid: original, ours")


@INITS.register("varnet")
def varnet(gain: float | None = None, sigma_w: float = 1.0, relu_gain: bool = True
           ) -> Initializer:
    """A variance-preserving baseline: N(0, g·√(σ_W/k)), k = kh·kw·out (fan_out), g = √2 for the
    3×3 block convs (``relu_gain``) and 1 for the stem and 1×1 shortcuts
    (docs/references.md#constant-init)."""
    del gain
    g = math.sqrt(2.0) if relu_gain else 1.0
    return _random("normal", lambda fan_in, fan_out: g * math.sqrt(sigma_w / fan_out))


def alternating_phase(index: int) -> float:
    """The phase of block ``index`` (0-based over all blocks): +1 even, −1 odd; the stem
    (``index=-1``) gets +1 (docs/references.md#init-strings)."""
    return 1.0 if index < 0 or index % 2 == 0 else -1.0


def _phase_const(phase: float, slope: float) -> float:
    """The constant of a phase: −1/slope for phase −1 with a leaky slope, else the phase itself,
    so (+I, −I/s) through two leaky ReLUs of slope s composes to the linear map −x."""
    return phase / slope if (phase < 0 and slope > 0) else phase


def _identity_taps(w: jax.Array, const: float, where: str) -> jax.Array:
    """Centre tap [d mod in, d] += const for every output channel d (needs out ≥ in)."""
    kh, kw, cin, cout = w.shape
    if cout < cin:
        raise ValueError(f"{where}: identity init needs out ≥ in channels, got in={cin}, "
                         f"out={cout}; use '1' (average) or 'h' (random) for this layer")
    d = jnp.arange(cout)
    return w.at[kh // 2, kw // 2, d % cin, d].add(const)


@INITS.register("identity_conv")
def identity_conv(gain: float | None = None, phase: float = 1.0, slope: float = 0.0
                  ) -> Initializer:
    """The ±identity conv: zero kernel, centre tap [d mod in, d] = c with c = phase, or
    phase/slope when phase < 0 and slope > 0 (docs/references.md#init-strings). Needs out ≥ in;
    output d copies input channel d mod in. ``gain`` is ignored (the map is exactly ±identity)."""
    del gain
    if phase not in (1.0, -1.0):
        raise ValueError(f"identity_conv: phase={phase!r}; valid: 1 or -1")
    const = _phase_const(phase, slope)

    def init(key, shape, dtype=jnp.float32):
        if len(shape) != 4:
            raise ValueError(f"identity_conv: needs a conv kernel (kh, kw, in, out), got shape "
                             f"{tuple(shape)}")
        return _identity_taps(jnp.zeros(shape, dtype), const, "identity_conv")

    return init


def check_init_string(init_string: str, num_layers: int) -> str:
    """The init string without underscores, checked against the layer count."""
    chars = init_string.replace("_", "")
    if len(chars) != num_layers:
        raise ValueError(f"init string {init_string!r} has {len(chars)} layer chars, "
                         f"the net has {num_layers} convs (expected {num_layers}: 1 stem + "
                         f"{num_layers - 1} blocks); e.g. "
                         f"{'1_' + '_'.join(['i' * ((num_layers - 1) // 3)] * 3)!r}")
    return chars


def init_string_init(char: str, index: int, lrelu: float = 0.0) -> Initializer:
    """The init of init-string character ``char`` at block ``index``
    (docs/references.md#init-strings); the stem uses ``index=-1`` (phase +1).

    phase = +1 for even blocks and the stem, −1 for odd ones; with phase −1 and lrelu > 0 the
    constant is divided by lrelu (so a (+I, −I/α) pair through two leaky ReLUs composes to −x).
    'h': N(0, √(g/k)), k = fan_in, g = √2·(1+lrelu) (variance g/k, g not squared [as-written]);
    '1': centre tap += c/in; 'i': centre tap [d, d mod in] += c (needs out ≥ in);
    'k': 0.99·identity + N(0, √(0.01·g/k)); any other char: 0.99·average + the same noise.
    """
    const = _phase_const(alternating_phase(index), lrelu)
    g = math.sqrt(2.0) * (1.0 + lrelu)
    where = "init string: stem" if index < 0 else f"init string: block {index} (layer {index + 1})"

    def init(key, shape, dtype=jnp.float32):
        kh, kw, cin, _ = shape
        fan_in = kh * kw * cin
        if char == "h":
            return math.sqrt(g / fan_in) * jax.random.normal(key, shape, dtype)
        w = jnp.zeros(shape, dtype)
        if char in ("i", "k"):
            base = _identity_taps(w, const, f"{where}, char {char!r}")
        else:
            base = w.at[kh // 2, kw // 2].add(const / cin)
        if char in ("1", "i"):
            return base
        noise = math.sqrt(g * 0.01 / fan_in) * jax.random.normal(key, shape, dtype)
        return 0.99 * base + noise

    return init


def init_string_layer_inits(init_string: str, lrelu: float = 0.0, num_layers: int | None = None,
                            *, depth: int | None = None) -> list[Initializer]:
    """One initializer per conv of a residual-free conv stack from an init string
    (docs/references.md#init-strings): layer 0 is the stem (phase +1), layer j ≥ 1 is block
    i = j−1 (phase +1 for even i, −1 for odd i). Underscores are ignored.

    The length is checked against ``num_layers`` (1 stem + blocks) or, with ``depth``, against
    the WRN depth's 1 + (depth−4) layers; a mismatch raises ValueError naming both lengths.
    """
    if depth is not None:
        if num_layers is not None:
            raise ValueError("init string: give num_layers or depth, not both")
        if depth < 7 or (depth - 4) % 3:
            raise ValueError(f"init string: depth={depth}; valid: 4 + 3n with n ≥ 1 (7, 10, 13, "
                             "16, 28, ...)")
        num_layers = depth - 3
    if num_layers is not None and (not isinstance(num_layers, int) or num_layers < 1):
        raise ValueError(f"init string: num_layers={num_layers!r}; valid: a positive int "
                         "(1 stem + blocks)")
    if not 0.0 <= lrelu < 1.0:
        raise ValueError(f"init string: lrelu={lrelu}; valid: 0 ≤ lrelu < 1 (the leaky slope)")
    chars = (check_init_string(init_string, num_layers) if num_layers is not None
             else init_string.replace("_", ""))
    if not chars:
        raise ValueError(f"empty init string {init_string!r}")
    return [init_string_init(c, j - 1, lrelu) for j, c in enumerate(chars)]


INITS.alias({
    "kaiming_norm": "kaiming_normal", "he_normal": "kaiming_normal",
    "he_uniform": "kaiming_uniform",
    "torch_linear_default": "torch_default",
    "glorot_uniform": "xavier_uniform", "glorot_normal": "xavier_normal",
    "delta_orth": "delta_orthogonal",
})
