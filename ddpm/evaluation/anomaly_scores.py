r"""Anomaly scores from a diffusion model (pure functions).

A model of the normal data denoises normal images well and others badly. The score of an
image x_0 is its denoising error averaged over a fixed set of time steps t_1..t_K and D draws
of the noise (the terms of L_simple, Ho et al. 2020, eq. 14, at those steps):

    e_k(x_0) = || eps_hat(x_{t_k}, t_k) - eps ||^2 / dim,
    x_{t_k} = sqrt(alpha_bar_{t_k}) x_0 + sqrt(1 - alpha_bar_{t_k}) eps,
    score(x_0) = mean_k e_k(x_0),

higher meaning more anomalous; the noise of image i depends on its key alone. The
variational bound in bits/dim (`ddpm.diffusion.likelihood`) is a second score (the negative
log-likelihood bound). Detection quality is the AUROC (`ddpm.evaluation.metrics.auroc`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ddpm.diffusion import forward, parameterization
from ddpm.diffusion.schedules import Schedule


SCORES = ("denoise", "bpd")


def denoising_errors(denoise_fn, schedule: Schedule, x0, key, timesteps, *,
                     num_draws: int = 1, prediction_type: str = "eps") -> jnp.ndarray:
  """e_k(x_0) of the module docstring, [B, K], each averaged over `num_draws` noise draws.

  `key` is one key per image ([B] typed or [B, 2] raw keys); draw d at step k uses
  fold_in(fold_in(key_i, k), d), so an image's errors do not depend on its batch.
  """
  ts = jnp.asarray(np.asarray(timesteps, np.int32))
  b = x0.shape[0]

  def at(k):
    t = ts[k]
    tb = jnp.full((b,), t, jnp.int32)

    def one(d, acc):
      eps = jax.vmap(lambda kk: jax.random.normal(
          jax.random.fold_in(jax.random.fold_in(kk, k), d), x0.shape[1:]))(key)
      xt = forward.q_sample(schedule, x0, tb, eps)
      out = denoise_fn(xt, tb).astype(jnp.float32)
      _, eps_hat = parameterization.model_output_to_x0_eps(schedule, prediction_type, out, xt,
                                                           tb, clip_x0=False)
      return acc + jnp.mean(jnp.square(eps_hat - eps), axis=tuple(range(1, x0.ndim)))
    return jax.lax.fori_loop(0, num_draws, one, jnp.zeros((b,), jnp.float32)) / num_draws

  return jax.lax.map(at, jnp.arange(len(timesteps))).T
