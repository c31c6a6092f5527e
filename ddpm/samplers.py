"""Reverse-process samplers: DDPM ancestral sampling and DDIM (pure, jit-able functions).

A sampler walks a decreasing sequence of time steps t_S-1 > ... > t_0 (a sub-sequence of
{0..T-1}, see `ddpm.schedules.sampling_timesteps`) from x_T ~ N(0, I) down to x_{-1} = x_0,
calling `denoise_fn(x_t, t) -> model output` once per step. The loop is a `lax.scan`, so a
sampler is one compiled program whatever the number of steps, and the same key always
gives the same samples. `key` is one key for the batch or one key per example ([B] typed or
[B, 2] raw keys); with a key per example, example i depends on key i alone, so samples do not
depend on how a request is split into batches or over devices.

Step (t -> s), with alpha_bar_{-1} = 1 and x0_hat, eps_hat from the model output:

  DDPM (Ho et al. 2020, Alg. 2 / eq. 6-7; Nichol & Dhariwal 2021, Sec. 4 for s < t - 1):
    x_s = mu(x0_hat, x_t) + sigma z,  sigma^2 = beta_tilde_{t|s} ("beta_tilde") or
          beta_{t|s} ("beta"),  no noise on the last step.
  DDIM (Song et al. 2021, eq. 12 and 16):
    x_s = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s - sigma^2) eps_hat + sigma z,
    sigma = eta sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_s).
  eta = 0 is deterministic; eta = 1 is DDPM with the beta_tilde variance.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ddpm import diffusion
from ddpm.schedules import Schedule, sampling_timesteps

DenoiseFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]
SAMPLERS = ("ddpm", "ddim")
VARIANCES = ("beta_tilde", "beta")


class SampleOutput(NamedTuple):
  samples: jnp.ndarray  # x_0, [B, ...]
  trajectory: jnp.ndarray | None  # [S + 1, B, ...]: x_T, then x after each step; or None.


def _is_key_batch(key) -> bool:
  """True for one key per example: [B] typed keys or [B, 2] raw uint32 keys."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key.ndim == 1
  return key.ndim == 2


def _normal(key, shape, dtype=jnp.float32):
  """N(0, I) of `shape`; with a key per example, example i is drawn from key i alone."""
  if _is_key_batch(key):
    return jax.vmap(lambda k: jax.random.normal(k, tuple(shape[1:]), dtype))(key)
  return jax.random.normal(key, shape, dtype)


def _split(key, num: int):
  """`num` keys ([num, ...]); with a key per example, [num, B, ...] keeping examples apart."""
  if _is_key_batch(key):
    return jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, num))(key), 0, 1)
  return jax.random.split(key, num)


def _alpha_bar_pair(schedule: Schedule, t, t_prev):
  ab_t = schedule.alpha_bars[t]
  ab_prev = jnp.where(t_prev >= 0, schedule.alpha_bars[jnp.maximum(t_prev, 0)], 1.0)
  return ab_t, ab_prev


def ddpm_step(schedule: Schedule, x0_hat, xt, t, t_prev, key, variance: str = "beta_tilde"):
  """One ancestral step x_t -> x_{t_prev} given the model's x0_hat (scalar t, t_prev).

  x_{t_prev} = mu_tilde(x0_hat, x_t) + sigma z with sigma^2 = beta_tilde or beta of the pair
  (see the module docstring); t_prev = -1 marks the last step, which adds no noise.
  """
  if variance not in VARIANCES:
    raise ValueError(f"DDPM variance {variance!r} is unknown; allowed: {', '.join(VARIANCES)}.")
  ab_t, ab_prev = _alpha_bar_pair(schedule, t, t_prev)
  coef_x0, coef_xt, var_tilde, beta = diffusion.posterior_coefficients(ab_t, ab_prev)
  mean = coef_x0 * x0_hat + coef_xt * xt
  var = var_tilde if variance == "beta_tilde" else beta
  z = _normal(key, xt.shape, xt.dtype)
  return mean + jnp.where(t_prev >= 0, jnp.sqrt(var), 0.0) * z


def ddim_step(schedule: Schedule, x0_hat, eps_hat, t, t_prev, key, eta: float = 0.0):
  """One DDIM step x_t -> x_{t_prev} (Song et al. 2021, eq. 12 with sigma of eq. 16)."""
  ab_t, ab_prev = _alpha_bar_pair(schedule, t, t_prev)
  sigma = eta * jnp.sqrt((1.0 - ab_prev) / (1.0 - ab_t)) * jnp.sqrt(1.0 - ab_t / ab_prev)
  direction = jnp.sqrt(jnp.maximum(1.0 - ab_prev - sigma**2, 0.0)) * eps_hat
  z = _normal(key, x0_hat.shape, x0_hat.dtype)
  return jnp.sqrt(ab_prev) * x0_hat + direction + sigma * z


def _sample_loop(step: Callable, denoise_fn: DenoiseFn, schedule: Schedule, key: jax.Array,
                 shape, timesteps: np.ndarray, prediction_type: str, clip_x0: bool,
                 x_T: jnp.ndarray | None, return_trajectory: bool) -> SampleOutput:
  diffusion.check_prediction_type(prediction_type)
  ts = np.asarray(timesteps, np.int32)
  if np.any(np.diff(ts) <= 0) or ts[0] < 0 or ts[-1] >= schedule.num_timesteps:
    raise ValueError(f"timesteps must increase within [0, {schedule.num_timesteps - 1}], got {ts}.")
  if _is_key_batch(key) and key.shape[0] != shape[0]:
    raise ValueError(f"{key.shape[0]} per-example keys for a batch of {shape[0]} samples.")
  init_key, loop_key = _split(key, 2)
  if x_T is None:
    x_T = _normal(init_key, shape, jnp.float32)
  elif tuple(x_T.shape) != tuple(shape):
    raise ValueError(f"x_T shape {x_T.shape} must equal the sample shape {tuple(shape)}.")
  # Pairs (t, t_prev) from the noisy end down, t_prev = -1 on the last step.
  t_seq = jnp.asarray(ts[::-1])
  t_prev_seq = jnp.asarray(np.append(ts[::-1][1:], -1).astype(np.int32))
  keys = _split(loop_key, len(ts))
  batch = shape[0]

  def body(x, inputs):
    t, t_prev, k = inputs
    tb = jnp.full((batch,), t, jnp.int32)
    out = denoise_fn(x, tb).astype(jnp.float32)
    x0_hat, eps_hat = diffusion.model_output_to_x0_eps(
        schedule, prediction_type, out, x, tb, clip_x0=clip_x0)
    x_prev = step(x, x0_hat, eps_hat, t, t_prev, k)
    return x_prev, (x_prev if return_trajectory else None)

  x0, traj = jax.lax.scan(body, x_T, (t_seq, t_prev_seq, keys))
  if return_trajectory:
    traj = jnp.concatenate([x_T[None], traj], axis=0)
  return SampleOutput(x0, traj)


def ddpm_sample(denoise_fn: DenoiseFn, schedule: Schedule, key: jax.Array, shape, *,
                num_steps: int | None = None, spacing: str = "uniform",
                variance: str = "beta_tilde", prediction_type: str = "eps",
                clip_x0: bool = True, x_T: jnp.ndarray | None = None,
                return_trajectory: bool = False, timesteps=None) -> SampleOutput:
  """Ancestral sampling (Ho et al. 2020, Alg. 2); `num_steps` < T samples a respaced chain.

  `timesteps` (increasing, overrides num_steps/spacing) with `x_T` = x at timesteps[-1] runs
  the reverse process from an intermediate step, e.g. to denoise (see `ddpm.denoising`).
  """
  if variance not in VARIANCES:
    raise ValueError(f"DDPM variance {variance!r} is unknown; allowed: {', '.join(VARIANCES)}.")
  ts = (sampling_timesteps(schedule.num_timesteps, num_steps or schedule.num_timesteps, spacing)
        if timesteps is None else timesteps)
  step = lambda x, x0, eps, t, tp, k: ddpm_step(schedule, x0, x, t, tp, k, variance)
  return _sample_loop(step, denoise_fn, schedule, key, shape, ts, prediction_type, clip_x0,
                      x_T, return_trajectory)


def ddim_sample(denoise_fn: DenoiseFn, schedule: Schedule, key: jax.Array, shape, *,
                num_steps: int = 50, eta: float = 0.0, spacing: str = "uniform",
                prediction_type: str = "eps", clip_x0: bool = True,
                x_T: jnp.ndarray | None = None, return_trajectory: bool = False,
                timesteps=None) -> SampleOutput:
  """DDIM sampling (Song et al. 2021, eq. 12) over `num_steps` respaced time steps.

  `timesteps` (increasing) overrides num_steps/spacing, as in `ddpm_sample`.
  """
  if isinstance(eta, (int, float)) and not eta >= 0.0:  # eta may also be a traced array.
    raise ValueError(f"DDIM eta={eta} must be >= 0.")
  ts = sampling_timesteps(schedule.num_timesteps, num_steps, spacing) if timesteps is None else timesteps
  step = lambda x, x0, eps, t, tp, k: ddim_step(schedule, x0, eps, t, tp, k, eta)
  return _sample_loop(step, denoise_fn, schedule, key, shape, ts, prediction_type, clip_x0,
                      x_T, return_trajectory)


def sample(method: str, denoise_fn: DenoiseFn, schedule: Schedule, key: jax.Array, shape,
           **kwargs) -> SampleOutput:
  """Dispatches to the sampler called `method` ("ddpm" or "ddim")."""
  if method == "ddpm":
    kwargs.pop("eta", None)
    return ddpm_sample(denoise_fn, schedule, key, shape, **kwargs)
  if method == "ddim":
    kwargs.pop("variance", None)
    return ddim_sample(denoise_fn, schedule, key, shape, **kwargs)
  raise ValueError(f"sampler {method!r} is unknown; allowed: {', '.join(SAMPLERS)}.")
