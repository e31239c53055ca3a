"""Formulations of a 3×3 conv's weight gradient, timed in one process (``python -m bench.wgrad``).

    python -m bench.wgrad [N H W C O] [--variants base,conv_t2,chunked]

Run it once with ``GNJ_XLA_DEFAULTS=0`` and once without to compare XLA's default convolution
path (YNNPACK fusions) with gnj's flags. Every variant is checked against ``jax.vjp`` of the
plain convolution before it is timed. Results are in ``docs/performance.md``.
"""

from __future__ import annotations

import statistics
import sys
import time


def variants(n: int, h: int, w: int, c: int, o: int) -> dict:
    import jax
    import jax.numpy as jnp
    from jax import lax

    dn = ("NHWC", "HWIO", "NHWC")
    conv = lambda x, k: lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                                 dimension_numbers=dn)
    k0 = jnp.zeros((3, 3, c, o))

    def base(x, dy):  # what jax.grad does: XLA's transposed convolution
        return jax.vjp(lambda k: conv(x, k), k0)[1](dy)[0]

    def fwd(x, dy):  # the forward conv, for scale
        return conv(x, jnp.ones((3, 3, c, o)) * 0.1)

    def conv_t2(x, dy):  # explicit layouts: batch=C_in, feature=N, kernel=dy
        xt, dyt = jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(dy, (1, 2, 0, 3))
        out = lax.conv_general_dilated(xt, dyt, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn)
        return jnp.transpose(out, (1, 2, 0, 3))

    def shifted(x, dy):  # nine matmuls over shifted inputs
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return jnp.stack([jnp.stack([jnp.einsum("nhwc,nhwd->cd", xp[:, i:i + h, j:j + w], dy)
                                     for j in range(3)]) for i in range(3)])

    def im2col(x, dy):  # one (9C × NHW) · (NHW × O) matmul
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        p = jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], -1)
        return jnp.einsum("nhwk,nhwd->kd", p, dy).reshape(3, 3, c, o)

    def chunked(x, dy, g=8):  # im2col over chunks of g images (cache-sized), accumulated
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))

        def body(acc, xs):
            xc, dc = xs
            p = jnp.concatenate([xc[:, i:i + h, j:j + w] for i in range(3) for j in range(3)],
                                -1)
            return acc + jnp.einsum("nhwk,nhwd->kd", p, dc), None

        acc, _ = lax.scan(body, jnp.zeros((9 * c, o)),
                          (xp.reshape(n // g, g, h + 2, w + 2, c), dy.reshape(n // g, g, h, w, o)))
        return acc.reshape(3, 3, c, o)

    return dict(fwd=fwd, base=base, conv_t2=conv_t2, shifted=shifted, im2col=im2col,
                chunked=chunked)


def main(argv: list[str]) -> None:
    from gnj import perf

    perf.apply()
    import jax
    import jax.numpy as jnp

    sel = None
    if "--variants" in argv:
        i = argv.index("--variants")
        sel = argv[i + 1].split(",")
        argv = argv[:i] + argv[i + 2:]
    n, h, w, c, o = map(int, argv) if argv else (128, 32, 32, 16, 16)
    fns = variants(n, h, w, c, o)
    sel = sel or list(fns)
    x = jax.random.normal(jax.random.PRNGKey(0), (n, h, w, c))
    dy = jax.random.normal(jax.random.PRNGKey(1), (n, h, w, o))
    ref = jax.jit(fns["base"])(x, dy)
    jf = {k: jax.jit(fns[k]) for k in sel}
    for k in sel:
        out = jf[k](x, dy).block_until_ready()
        if k != "fwd":
            err = float(jnp.max(jnp.abs(out - ref)) / jnp.max(jnp.abs(ref)))
            assert err < 1e-4, (k, err)
    ts: dict[str, list[float]] = {k: [] for k in sel}
    for _ in range(7):
        for k in sel:
            t = time.perf_counter()
            for _ in range(3):
                out = jf[k](x, dy)
            out.block_until_ready()
            ts[k].append((time.perf_counter() - t) / 3 * 1e3)
    import os

    print(f"shape {(n, h, w, c, o)} XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    for k in sel:
        print(f"  {k:8s} median {statistics.median(ts[k]):8.2f} ms  min {min(ts[k]):8.2f} ms")


if __name__ == "__main__":
    main(sys.argv[1:])
