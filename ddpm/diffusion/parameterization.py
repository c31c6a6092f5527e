"""What the network predicts: eps, x_0 or v, and the conversions between them (pure functions).

Given x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Ho et al. 2020, eq. 4), any one
of eps, x_0 and v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 (Salimans & Ho 2022,
Sec. 4) determines the other two; `model_output_to_x0_eps` turns a model output of any
`prediction_type` into (x0_hat, eps_hat), which is all a sampler needs, and `training_target`
is the regression target of each. Arrays are batched [B, ...], t is an integer array [B].
"""

from __future__ import annotations

import jax.numpy as jnp

from ddpm.diffusion.forward import extract
from ddpm.diffusion.schedules import Schedule

PREDICTION_TYPES = ("eps", "x0", "v")


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
