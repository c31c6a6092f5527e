"""Forward process, posterior and model-output parameterizations (pure functions).

Every function takes arrays and a `Schedule` (see `ddpm.schedules`), never global state.
`x` arrays are batched, shape [B, ...]; `t` is an integer array of shape [B] with entries
in {0, ..., T-1} (0-based, see `ddpm.schedules`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ddpm.schedules import Schedule

PREDICTION_TYPES = ("eps", "x0", "v")


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


def x0_from_eps(schedule: Schedule, xt, t, eps):
  """x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)   (inverse of eq. 4)."""
  return ((xt - extract(schedule.sqrt_one_minus_alpha_bars, t, xt.shape) * eps)
          / extract(schedule.sqrt_alpha_bars, t, xt.shape))


def eps_from_x0(schedule: Schedule, xt, t, x0):
  """eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)   (inverse of eq. 4)."""
  return ((xt - extract(schedule.sqrt_alpha_bars, t, xt.shape) * x0)
          / extract(schedule.sqrt_one_minus_alpha_bars, t, xt.shape))


def v_from_x0_eps(schedule: Schedule, x0, t, eps):
  """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0   (Salimans & Ho 2022, Sec. 4)."""
  return (extract(schedule.sqrt_alpha_bars, t, x0.shape) * eps
          - extract(schedule.sqrt_one_minus_alpha_bars, t, x0.shape) * x0)


def x0_from_v(schedule: Schedule, xt, t, v):
  """x_0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v   (Salimans & Ho 2022, App. D)."""
  return (extract(schedule.sqrt_alpha_bars, t, xt.shape) * xt
          - extract(schedule.sqrt_one_minus_alpha_bars, t, xt.shape) * v)


def eps_from_v(schedule: Schedule, xt, t, v):
  """eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v   (Salimans & Ho 2022, App. D)."""
  return (extract(schedule.sqrt_one_minus_alpha_bars, t, xt.shape) * xt
          + extract(schedule.sqrt_alpha_bars, t, xt.shape) * v)


def check_prediction_type(prediction_type: str) -> None:
  if prediction_type not in PREDICTION_TYPES:
    raise ValueError(
        f"prediction_type {prediction_type!r} is unknown; allowed: {', '.join(PREDICTION_TYPES)}.")


def training_target(schedule: Schedule, prediction_type: str, x0, t, eps):
  """The regression target of a model that predicts `prediction_type` at (x_t, t)."""
  check_prediction_type(prediction_type)
  if prediction_type == "eps":
    return eps
  if prediction_type == "x0":
    return x0
  return v_from_x0_eps(schedule, x0, t, eps)


def model_output_to_x0_eps(schedule: Schedule, prediction_type: str, model_output, xt, t,
                           clip_x0: bool = False, clip_range: float = 1.0):
  """Converts a model output of any parameterization to (x0_hat, eps_hat).

  With `clip_x0`, x0_hat is clipped to [-clip_range, clip_range] (data range) and eps_hat is
  recomputed from the clipped x0_hat so the two stay consistent with x_t (as in the DDPM and
  DDIM reference samplers).
  """
  check_prediction_type(prediction_type)
  if prediction_type == "eps":
    eps = model_output
    x0 = x0_from_eps(schedule, xt, t, eps)
  elif prediction_type == "x0":
    x0 = model_output
    eps = eps_from_x0(schedule, xt, t, x0)
  else:
    x0 = x0_from_v(schedule, xt, t, model_output)
    eps = eps_from_v(schedule, xt, t, model_output)
  if clip_x0:
    x0 = jnp.clip(x0, -clip_range, clip_range)
    eps = eps_from_x0(schedule, xt, t, x0)
  return x0, eps


def snr(schedule: Schedule, t: jnp.ndarray) -> jnp.ndarray:
  """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) (Kingma et al. 2021, eq. 2)."""
  ab = schedule.alpha_bars[t]
  return ab / (1.0 - ab)


def sample_timesteps_and_noise(key: jax.Array, x0: jnp.ndarray, num_timesteps: int,
                               example_ids: jnp.ndarray | None = None):
  """t ~ Uniform{0..T-1} and eps ~ N(0, I) for a batch, one independent draw per example.

  Example i draws from `fold_in(key, example_ids[i])` (default ids 0..B-1), so a draw depends
  only on the key and the example's global id: a batch split across devices, each device
  passing the global ids of its shard, gets exactly the draws of the whole batch on one device.
  """
  if example_ids is None:
    example_ids = jnp.arange(x0.shape[0])
  if example_ids.shape != x0.shape[:1]:
    raise ValueError(f"example_ids shape {example_ids.shape} must be [batch]={x0.shape[:1]}.")

  def one(i, x):
    kt, kn = jax.random.split(jax.random.fold_in(key, i))
    return (jax.random.randint(kt, (), 0, num_timesteps, dtype=jnp.int32),
            jax.random.normal(kn, x.shape, x.dtype))
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
