"""The training loss's dtype rule: ``train.cross_entropy`` computes in
promote(logits dtype, float32)."""

import jax
import jax.numpy as jnp
import numpy as np

from gnj import train


def test_cross_entropy_computes_in_promote_of_logits_and_float32():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(4, 5)) * 3, np.array([0, 3, 4, 1])
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    with jax.enable_x64(True):
        z = jnp.asarray(logits, jnp.float64)
        loss = train.cross_entropy(z, jnp.asarray(labels))
        grad = jax.grad(lambda z: jnp.sum(train.cross_entropy(z, jnp.asarray(labels))))(z)
    assert loss.dtype == grad.dtype == jnp.float64
    np.testing.assert_allclose(loss, -np.log(p[np.arange(4), labels]), rtol=1e-13)
    np.testing.assert_allclose(grad, p - np.eye(5)[labels], rtol=1e-12, atol=1e-14)
    assert train.cross_entropy(jnp.asarray(logits, jnp.bfloat16),
                               jnp.asarray(labels)).dtype == jnp.float32
