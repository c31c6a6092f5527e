"""PRNG keys for a batch: one key for the whole batch, or one key per example (pure functions).

A sampler, RePaint or an anomaly score takes either a single key or one key per example ([B]
typed keys or [B, 2] raw uint32 keys). With a key per example, example i is drawn from key i
alone, so results do not depend on how a request is split into batches or over devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def is_key_batch(key) -> bool:
  """True for one key per example: [B] typed keys or [B, 2] raw uint32 keys."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key.ndim == 1
  return key.ndim == 2


def normal(key, shape, dtype=jnp.float32):
  """N(0, I) of `shape`; with a key per example, example i is drawn from key i alone."""
  if is_key_batch(key):
    return jax.vmap(lambda k: jax.random.normal(k, tuple(shape[1:]), dtype))(key)
  return jax.random.normal(key, shape, dtype)


def split(key, num: int):
  """`num` keys ([num, ...]); with a key per example, [num, B, ...] keeping examples apart."""
  if is_key_batch(key):
    return jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, num))(key), 0, 1)
  return jax.random.split(key, num)
