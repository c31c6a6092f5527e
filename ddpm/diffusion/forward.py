"""The forward process q(x_t | x_0), its posterior q(x_s | x_t, x_0), and per-example draws
of (t, eps) (pure functions).

Every function takes arrays and a `Schedule` (see `ddpm.diffusion.schedules`), never global
state. `x` arrays are batched, shape [B, ...]; `t` is an integer array of shape [B] with
entries in {0, ..., T-1} (0-based, see `ddpm.diffusion.schedules`). What the network predicts
(eps, x_0 or v) and how to convert between them is `ddpm.diffusion.parameterization`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ddpm.diffusion.schedules import Schedule


def _check_xt(x: jnp.ndarray, t: jnp.ndarray) -> None:
  if x.ndim < 1 or t.ndim != 1 or t.shape[0] != x.shape[0]:
    raise ValueError(
        f"t must have shape [batch]={x.shape[:1]} to match x of shape {x.shape}, got {t.shape}.")
  if not jnp.issubdtype(t.dtype, jnp.integer):
    raise TypeError(f"t must be an integer array of time steps, got dtype {t.dtype}.")


def extract(a: jnp.ndarray, t: jnp.ndarray, x_shape) -> jnp.ndarray:
  """a[t] reshaped to [B, 1, ..., 1] so that it broadcasts against an array of `x_shape`."""
  return a[t].reshape((t.shape[0],) + (1,) * (len(x_shape) - 1))


def q_mean_variance(schedule: Schedule, x0: jnp.ndarray, t: jnp.ndarray):
  """Mean and variance of q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I).

  Ho et al. 2020, eq. 4. Returns (mean [B, ...], variance [B, 1, ..., 1]).
  """
  _check_xt(x0, t)
  mean = extract(schedule.sqrt_alpha_bars, t, x0.shape) * x0
  variance = 1.0 - extract(schedule.alpha_bars, t, x0.shape)
  return mean, variance


def q_sample(schedule: Schedule, x0: jnp.ndarray, t: jnp.ndarray, noise: jnp.ndarray) -> jnp.ndarray:
  """Draws x_t ~ q(x_t | x_0) by reparameterization (Ho et al. 2020, eq. 4 and Alg. 1):

      x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,   eps ~ N(0, I).
  """
  _check_xt(x0, t)
  if noise.shape != x0.shape:
    raise ValueError(f"noise shape {noise.shape} must equal x0 shape {x0.shape}.")
  return (extract(schedule.sqrt_alpha_bars, t, x0.shape) * x0
          + extract(schedule.sqrt_one_minus_alpha_bars, t, x0.shape) * noise)


def q_posterior_mean_variance(schedule: Schedule, x0: jnp.ndarray, xt: jnp.ndarray, t: jnp.ndarray):
  """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 6-7).

      mu_tilde = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
               + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t
      beta_tilde = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t
  """
  _check_xt(xt, t)
  if x0.shape != xt.shape:
    raise ValueError(f"x0 shape {x0.shape} must equal xt shape {xt.shape}.")
  mean = (extract(schedule.posterior_mean_coef_x0, t, xt.shape) * x0
          + extract(schedule.posterior_mean_coef_xt, t, xt.shape) * xt)
  variance = extract(schedule.posterior_variance, t, xt.shape)
  log_variance = extract(schedule.posterior_log_variance_clipped, t, xt.shape)
  return mean, variance, log_variance


def snr(schedule: Schedule, t: jnp.ndarray) -> jnp.ndarray:
  """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) (Kingma et al. 2021, eq. 2)."""
  ab = schedule.alpha_bars[t]
  return ab / (1.0 - ab)


def sample_timesteps_and_noise(key: jax.Array, x0: jnp.ndarray, num_timesteps: int,
                               example_ids: jnp.ndarray | None = None,
                               timestep_probs: jnp.ndarray | None = None):
  """t ~ Uniform{0..T-1} (or t ~ `timestep_probs`, a distribution over 0..T-1) and
  eps ~ N(0, I) for a batch, one independent draw per example.

  Example i draws from `fold_in(key, example_ids[i])` (default ids 0..B-1), so a draw depends
  only on the key and the example's global id: a batch split across devices, each device
  passing the global ids of its shard, gets exactly the draws of the whole batch on one device.
  """
  if example_ids is None:
    example_ids = jnp.arange(x0.shape[0])
  if example_ids.shape != x0.shape[:1]:
    raise ValueError(f"example_ids shape {example_ids.shape} must be [batch]={x0.shape[:1]}.")
  if timestep_probs is not None and timestep_probs.shape != (num_timesteps,):
    raise ValueError(f"timestep_probs shape {timestep_probs.shape} must be [num_timesteps]="
                     f"({num_timesteps},).")

  def one(i, x):
    kt, kn = jax.random.split(jax.random.fold_in(key, i))
    if timestep_probs is None:
      t = jax.random.randint(kt, (), 0, num_timesteps, dtype=jnp.int32)
    else:
      t = jax.random.categorical(kt, jnp.log(timestep_probs)).astype(jnp.int32)
    return t, jax.random.normal(kn, x.shape, x.dtype)
  return jax.vmap(one)(example_ids, x0)


def posterior_coefficients(alpha_bar_t, alpha_bar_prev):
  """Coefficients of q(x_s | x_t, x_0) for any pair of steps s < t, from alpha_bar alone.

  With alpha_{t|s} = alpha_bar_t / alpha_bar_s and beta_{t|s} = 1 - alpha_{t|s} (the one-step
  quantities of the sub-sequence, Nichol & Dhariwal 2021, Sec. 4), eq. 7 of Ho et al. 2020
  becomes

      mu = sqrt(alpha_bar_s) beta_{t|s} / (1 - alpha_bar_t) x_0
         + sqrt(alpha_{t|s}) (1 - alpha_bar_s) / (1 - alpha_bar_t) x_t,
      var = (1 - alpha_bar_s) / (1 - alpha_bar_t) beta_{t|s}.

  For s = t - 1 these are the schedule's `posterior_*` constants. Returns
  (coef_x0, coef_xt, posterior_variance, beta_{t|s}).
  """
  alpha_ts = alpha_bar_t / alpha_bar_prev
  beta_ts = 1.0 - alpha_ts
  coef_x0 = jnp.sqrt(alpha_bar_prev) * beta_ts / (1.0 - alpha_bar_t)
  coef_xt = jnp.sqrt(alpha_ts) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)
  variance = (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * beta_ts
  return coef_x0, coef_xt, variance, beta_ts
