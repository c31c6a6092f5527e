r"""Exponential moving average of the parameters (pure functions).

    ema_{s+1} = d_s ema_s + (1 - d_s) params_{s+1},
    d_s = decay, or with warm-up min(decay, (1 + s) / (10 + s)),

the warm-up of TensorFlow's ExponentialMovingAverage with num_updates, which the DDPM
reference code uses; the parameters used for sampling are the EMA ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ema_decay_at(step, decay: float, warmup: bool):
  """EMA decay at `step`; with warm-up min(decay, (1 + step) / (10 + step)) as in TF's EMA."""
  if not warmup:
    return jnp.asarray(decay, jnp.float32)
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema_params, params, decay):
  """ema <- decay * ema + (1 - decay) * params, leaf by leaf, computed as
  ema + (1 - decay) (params - ema): a parameter equal to its EMA (a frozen one) keeps it
  bit for bit."""
  return jax.tree_util.tree_map(lambda e, p: e + (1.0 - decay) * (p - e), ema_params, params)
