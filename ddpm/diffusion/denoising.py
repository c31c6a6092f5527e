r"""Denoising images with a trained diffusion model (pure functions).

An image y = x_0 + sigma n with n ~ N(0, I) (in the model's [-1, 1] range) is, after scaling,
a draw from the forward process: sqrt(alpha_bar_t) y = sqrt(alpha_bar_t) x_0 +
sqrt(alpha_bar_t) sigma n, which is q(x_t | x_0) (Ho et al. 2020, eq. 4) exactly when
sqrt(alpha_bar_t) sigma = sqrt(1 - alpha_bar_t), i.e. at the step whose noise-to-signal ratio

  sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)

equals sigma. `timestep_for_sigma` picks the step with the nearest sigma_t. From x_t the model
either predicts x_0 in one step (the posterior-mean estimate E[x_0 | x_t], eq. 15 of Ho et
al. 2020 rearranged), or the reverse process runs from t down to 0 (DDPM ancestral or DDIM),
as SDEdit does (Meng et al. 2022, Sec. 3) with a chosen strength t.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ddpm.diffusion import parameterization, samplers
from ddpm.diffusion.schedules import Schedule, sampling_timesteps


def noise_to_signal(schedule: Schedule) -> np.ndarray:
  """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) for every step, float64 [T]."""
  ab = np.asarray(schedule.alpha_bars, np.float64)
  return np.sqrt((1.0 - ab) / ab)


def timestep_for_sigma(schedule: Schedule, sigma: float) -> int:
  """The 0-based step whose sigma_t is nearest to `sigma` (noise std in the [-1, 1] range)."""
  if not np.isfinite(sigma) or sigma <= 0:
    raise ValueError(f"noise level sigma={sigma} must be a positive number.")
  s = noise_to_signal(schedule)
  if sigma > s[-1]:
    raise ValueError(f"noise level sigma={sigma:g} exceeds the schedule's largest "
                     f"sqrt((1 - alpha_bar) / alpha_bar) = {s[-1]:.4g}.")
  return int(np.argmin(np.abs(np.log(s) - np.log(sigma))))


def noisy_to_xt(schedule: Schedule, y, t: int):
  """x_t = sqrt(alpha_bar_t) y: a noisy image as a forward-process state at step t."""
  return schedule.sqrt_alpha_bars[t] * y


def perturb_to_xt(schedule: Schedule, y, t: int, noise_sigma: float, key):
  """x_t ~ q(x_t | x_0) from an image y = x_0 + noise_sigma n that already carries Gaussian noise
  of std `noise_sigma` (model range; 0 for a clean image): SDEdit's start (Meng et al. 2022,
  Sec. 3) at strength t.

      x_t = sqrt(alpha_bar_t) y + sqrt(1 - alpha_bar_t (1 + noise_sigma^2)) z,  z ~ N(0, I),

  so x_t has mean sqrt(alpha_bar_t) x_0 and variance alpha_bar_t noise_sigma^2 plus the added
  1 - alpha_bar_t (1 + noise_sigma^2), i.e. 1 - alpha_bar_t: eq. 4 of Ho et al. (2020). Needs
  t at or above the step `timestep_for_sigma(noise_sigma)` of the input's own noise level; at
  that step nothing is added (the negative remainder of the nearest step is taken as 0) and
  x_t = sqrt(alpha_bar_t) y (`noisy_to_xt`).
  """
  ab = float(np.asarray(schedule.alpha_bars, np.float64)[t])
  extra = 1.0 - ab * (1.0 + float(noise_sigma) ** 2)
  if noise_sigma > 0 and t < timestep_for_sigma(schedule, noise_sigma):
    raise ValueError(f"step t={t} (sigma_t={np.sqrt((1 - ab) / ab):.4g}) is below the input's "
                     f"noise level {noise_sigma:g}; allowed: t >= "
                     f"{timestep_for_sigma(schedule, noise_sigma)}.")
  z = jax.random.normal(key, y.shape, jnp.float32)
  return np.sqrt(ab) * y + np.sqrt(max(extra, 0.0)) * z


def denoise_one_step(denoise_fn, schedule: Schedule, y, t: int, *, prediction_type: str = "eps",
                     clip_x0: bool = True):
  """x0_hat(x_t, t) for x_t = sqrt(alpha_bar_t) y: one network evaluation."""
  xt = noisy_to_xt(schedule, y, t)
  tb = jnp.full((y.shape[0],), t, jnp.int32)
  out = denoise_fn(xt, tb).astype(jnp.float32)
  x0, _ = parameterization.model_output_to_x0_eps(schedule, prediction_type, out, xt, tb,
                                                  clip_x0=clip_x0)
  return x0


def denoise_reverse(denoise_fn, schedule: Schedule, y, t: int, key, *, method: str = "ddpm",
                    num_steps: int | None = None, eta: float = 0.0, variance: str = "beta_tilde",
                    prediction_type: str = "eps", clip_x0: bool = True, x_t=None):
  """Runs the reverse process from x_t = sqrt(alpha_bar_t) y (or the given `x_t`, e.g. from
  `perturb_to_xt`) at step t down to x_0.

  `num_steps` (default and at most t + 1: every step) steps end exactly at t ("trailing"
  spacing over {0..t}); `method` is any of `samplers.SAMPLERS` ("ddpm" ancestral with
  `variance`, "ddim" with `eta`, or an ODE solver).
  """
  ts = sampling_timesteps(t + 1, min(num_steps or t + 1, t + 1), "trailing")
  return samplers.sample(method, denoise_fn, schedule, key, y.shape, eta=eta, variance=variance,
                         prediction_type=prediction_type, clip_x0=clip_x0,
                         x_T=noisy_to_xt(schedule, y, t) if x_t is None else x_t,
                         timesteps=ts).samples
