"""Training objectives (pure functions, split from the model as in score_sde's losses.py).

The simplified DDPM objective (Ho et al. 2020, eq. 14) with t ~ Uniform{0..T-1}:

    L_simple = E_{t, x_0, eps} || target(x_0, eps, t) - f_theta(x_t, t) ||^2 / D

where target is eps (the paper's choice), x_0 or v = sqrt(alpha_bar) eps - sqrt(1-alpha_bar) x_0
(Salimans & Ho 2022), and D the number of pixels. An optional per-t weight w(t) multiplies the
per-example error; "min_snr" is the Min-SNR-gamma weighting of Hang et al. 2023 (eq. 7-9),
written for each parameterization so that all three weight the x_0 error by min(SNR, gamma).

Where t is drawn: uniformly, or ("importance") from p(t) = w(t) / sum_s w(s), with each example's
error weighted by w(t) / (T p(t)) instead of w(t). Both estimate the same objective,

    E_{t ~ U} [ w(t) l(t) ] = sum_t p(t) [ w(t) / (T p(t)) ] l(t)     (importance sampling,
                                                                     Owen 2013, Sec. 9.1)

but with p proportional to w every example's weight is the constant mean_t w(t), so the batch
no longer spends examples on steps the weighting all but ignores (under Min-SNR-5 with v
targets and linear betas, the 48% of steps with w < 0.05: t < 27 and t > 541). Nichol & Dhariwal
2021 (Sec. 3.3) sample t by importance for L_vlb; here p is fixed by the weighting, not learned.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ddpm.diffusion import forward, parameterization
from ddpm.diffusion.schedules import Schedule

WEIGHTINGS = ("none", "min_snr")
TIMESTEP_SAMPLINGS = ("uniform", "importance")


def mean_flat(x: jnp.ndarray) -> jnp.ndarray:
  """Mean over every axis but the first: [B, ...] -> [B]."""
  return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def loss_weight(schedule: Schedule, t: jnp.ndarray, prediction_type: str,
                weighting: str = "none", min_snr_gamma: float = 5.0) -> jnp.ndarray:
  """Per-example loss weight w(t), shape [B].

  "none": w = 1 (L_simple). "min_snr" (Hang et al. 2023): the x_0-space weight min(SNR, gamma)
  divided by the factor that maps the chosen target's squared error to the x_0 error:
  SNR for eps (w = min(SNR, gamma) / SNR), SNR + 1 for v, and 1 for x_0.
  """
  parameterization.check_prediction_type(prediction_type)
  if weighting == "none":
    return jnp.ones(t.shape, jnp.float32)
  if weighting != "min_snr":
    raise ValueError(f"loss weighting {weighting!r} is unknown; allowed: {', '.join(WEIGHTINGS)}.")
  s = forward.snr(schedule, t)
  clipped = jnp.minimum(s, min_snr_gamma)
  if prediction_type == "eps":
    return clipped / s
  if prediction_type == "v":
    return clipped / (s + 1.0)
  return clipped


def timestep_distribution(schedule: Schedule, prediction_type: str, weighting: str = "none",
                          min_snr_gamma: float = 5.0) -> jnp.ndarray:
  """p(t) = w(t) / sum_s w(s) over t = 0..T-1 (float32 [T]): the importance distribution of t
  for the loss weights w of `loss_weight` (uniform for L_simple)."""
  w = loss_weight(schedule, jnp.arange(schedule.num_timesteps), prediction_type, weighting,
                  min_snr_gamma)
  return w / jnp.sum(w)


def denoising_loss(model_output: jnp.ndarray, target: jnp.ndarray,
                   weights: jnp.ndarray | None = None) -> jnp.ndarray:
  """Weighted mean squared error mean_i w_i ||output_i - target_i||^2 / D (a scalar)."""
  if model_output.shape != target.shape:
    raise ValueError(f"model output shape {model_output.shape} != target shape {target.shape}.")
  per_example = mean_flat(jnp.square(model_output.astype(jnp.float32) - target.astype(jnp.float32)))
  if weights is not None:
    per_example = per_example * weights
  return jnp.mean(per_example)


def diffusion_loss(
    denoise_fn: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray],
    schedule: Schedule,
    x0: jnp.ndarray,
    t: jnp.ndarray,
    noise: jnp.ndarray,
    *,
    prediction_type: str = "eps",
    weighting: str = "none",
    min_snr_gamma: float = 5.0,
    timestep_probs: jnp.ndarray | None = None,
):
  """The DDPM training loss for given time steps and noise (Ho et al. 2020, Alg. 1).

  Args:
    denoise_fn: f(x_t, t) -> model output of x_t's shape.
    schedule: the noise schedule.
    x0: clean data [B, ...] in [-1, 1].
    t: integer time steps [B].
    noise: eps [B, ...].
    timestep_probs: the distribution p [T] that t was drawn from (`timestep_distribution`);
      each example is then weighted by w(t) / (T p(t)) instead of w(t). None: t is uniform.
  Returns:
    (loss, aux) where aux holds the per-example squared errors for logging per t.
  """
  xt = forward.q_sample(schedule, x0, t, noise)
  output = denoise_fn(xt, t)
  target = parameterization.training_target(schedule, prediction_type, x0, t, noise)
  weights = loss_weight(schedule, t, prediction_type, weighting, min_snr_gamma)
  if timestep_probs is not None:
    if timestep_probs.shape != (schedule.num_timesteps,):
      raise ValueError(f"timestep_probs shape {timestep_probs.shape} must be [num_timesteps]="
                       f"({schedule.num_timesteps},).")
    weights = weights / (schedule.num_timesteps * timestep_probs[t])
  loss = denoising_loss(output, target, weights)
  per_example = mean_flat(jnp.square(output.astype(jnp.float32) - target))
  return loss, {"per_example_mse": per_example}


def sampled_diffusion_loss(denoise_fn, schedule: Schedule, x0: jnp.ndarray, key: jax.Array,
                           example_ids: jnp.ndarray | None = None, *,
                           timestep_sampling: str = "uniform", prediction_type: str = "eps",
                           weighting: str = "none", min_snr_gamma: float = 5.0):
  """`diffusion_loss` with t and eps ~ N(0, I) drawn per example from `key`: t ~ Uniform{0..T-1}
  ("uniform"), or t ~ p(t) of `timestep_distribution` weighted by w(t) / (T p(t))
  ("importance"; the same objective in expectation, see the module docstring)."""
  w_args = dict(prediction_type=prediction_type, weighting=weighting, min_snr_gamma=min_snr_gamma)
  if timestep_sampling == "uniform":
    t, noise = forward.sample_timesteps_and_noise(key, x0, schedule.num_timesteps, example_ids)
    return diffusion_loss(denoise_fn, schedule, x0, t, noise, **w_args)
  if timestep_sampling != "importance":
    raise ValueError(f"timestep sampling {timestep_sampling!r} is unknown; allowed: "
                     f"{', '.join(TIMESTEP_SAMPLINGS)}.")
  probs = timestep_distribution(schedule, **w_args)
  t, noise = forward.sample_timesteps_and_noise(key, x0, schedule.num_timesteps, example_ids,
                                                timestep_probs=probs)
  return diffusion_loss(denoise_fn, schedule, x0, t, noise, timestep_probs=probs, **w_args)
