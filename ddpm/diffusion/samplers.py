"""Reverse-process samplers: DDPM, DDIM, DPM-Solver++(2M) and Heun (pure, jit-able functions).

A sampler walks a decreasing sequence of time steps t_S-1 > ... > t_0 (a sub-sequence of
{0..T-1}, see `ddpm.diffusion.schedules.sampling_timesteps`) from x_T ~ N(0, I) down to
x_{-1} = x_0,
calling `denoise_fn(x_t, t) -> model output` once per step (Heun: twice). The loop is a
`lax.scan`, so a sampler is one compiled program whatever the number of steps, and the same
key always gives the same samples. `key` is one key for the batch or one key per example ([B]
typed or [B, 2] raw keys); with a key per example, example i depends on key i alone, so samples
do not depend on how a request is split into batches or over devices.

Step (t -> s), with alpha_bar_{-1} = 1 and x0_hat, eps_hat from the model output:

  DDPM (Ho et al. 2020, Alg. 2 / eq. 6-7; Nichol & Dhariwal 2021, Sec. 4 for s < t - 1):
    x_s = mu(x0_hat, x_t) + sigma z,  sigma^2 = beta_tilde_{t|s} ("beta_tilde") or
          beta_{t|s} ("beta"),  no noise on the last step.
  DDIM (Song et al. 2021, eq. 12 and 16):
    x_s = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s - sigma^2) eps_hat + sigma z,
    sigma = eta sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_s).
  eta = 0 is deterministic; eta = 1 is DDPM with the beta_tilde variance.

Two deterministic ODE solvers of the probability-flow ODE use the same time steps, with
alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t), lambda_t = log(alpha_t / sigma_t)
(half the log-SNR). Both step only between the model's own discrete time steps, so the model
is never asked for a fractional t. Their key only draws x_T.

  DPM-Solver++(2M) (Lu et al. 2022, Alg. 2; data prediction, multistep, second order), with
  h = lambda_s - lambda_t and u the time step before t (r = (lambda_t - lambda_u) / h):
    x_s = (sigma_s / sigma_t) x_t - alpha_s (exp(-h) - 1) D,
    D = (1 + 1 / (2 r)) x0_hat(x_t, t) - 1 / (2 r) x0_hat(x_u, u).
  D = x0_hat(x_t, t) (first order, which is DDIM with eta = 0) on the first step, which has no
  history, and on the last step, t_0 -> data: there sigma_s = 0 (lambda_s = inf, r = 0, so the
  second-order D is undefined) and alpha_s = 1, so x_{-1} = x0_hat(x_{t_0}, t_0), as diffusers'
  DPMSolverMultistepScheduler does with final_sigmas_type="zero" (and the reference code with
  denoise_to_zero). With lower_order_final (default) and fewer than 15 steps, the step
  t_1 -> t_0 into the smallest time step is first order too: it is the reference code's final
  step (lower_order_final, there for fewer than 10 steps) and diffusers' with
  final_sigmas_type="sigma_min" (fewer than 15). One network evaluation per step: NFE = num_steps.
  Heun (Karras et al. 2022, "EDM", Alg. 1 deterministic, S_churn = 0) in EDM's variables
  x_hat = x_t / alpha_t, sigma_hat_t = sigma_t / alpha_t = exp(-lambda_t), with the denoiser
  D(x_hat; sigma_hat_t) = x0_hat(alpha_t x_hat, t), whose ODE slope d = (x_hat - D) / sigma_hat
  is eps_hat(alpha_t x_hat, t):
    x'_s = x_hat_t + (sigma_hat_s - sigma_hat_t) d_t                (Euler = DDIM with eta = 0)
    x_hat_s = x_hat_t + (sigma_hat_s - sigma_hat_t) (d_t + d'_s) / 2,  d'_s = slope at (x'_s, s).
  The last step, to sigma_hat = 0, is Euler alone: x_{-1} = x0_hat(x_{t_0}, t_0). A Heun step
  costs two network evaluations: NFE = 2 num_steps - 1.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ddpm.diffusion import forward, keys, parameterization
from ddpm.diffusion.schedules import Schedule, alpha_bar_at, sampling_timesteps

DenoiseFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]
SAMPLERS = ("ddpm", "ddim", "dpm_solver_pp_2m", "heun")
VARIANCES = ("beta_tilde", "beta")


class SampleOutput(NamedTuple):
  samples: jnp.ndarray  # x_0, [B, ...]
  trajectory: jnp.ndarray | None  # [S + 1, B, ...]: x_T, then x after each step; or None.


def _alpha_bar_pair(schedule: Schedule, t, t_prev):
  return schedule.alpha_bars[t], alpha_bar_at(schedule, t_prev)


def ddpm_step(schedule: Schedule, x0_hat, xt, t, t_prev, key, variance: str = "beta_tilde"):
  """One ancestral step x_t -> x_{t_prev} given the model's x0_hat (scalar t, t_prev).

  x_{t_prev} = mu_tilde(x0_hat, x_t) + sigma z with sigma^2 = beta_tilde or beta of the pair
  (see the module docstring); t_prev = -1 marks the last step, which adds no noise. Between
  adjacent steps (t_prev = t - 1, the full chain) the coefficients are the schedule's own
  (Ho et al. 2020, eq. 7, computed in float64); the pairwise formula from alpha_bar ratios in
  float32 would be off by up to ~5e-4 relative at small t.
  """
  if variance not in VARIANCES:
    raise ValueError(f"DDPM variance {variance!r} is unknown; allowed: {', '.join(VARIANCES)}.")
  ab_t, ab_prev = _alpha_bar_pair(schedule, t, t_prev)
  coef_x0, coef_xt, var_tilde, beta = forward.posterior_coefficients(ab_t, ab_prev)
  adjacent = t_prev == t - 1
  coef_x0 = jnp.where(adjacent, schedule.posterior_mean_coef_x0[t], coef_x0)
  coef_xt = jnp.where(adjacent, schedule.posterior_mean_coef_xt[t], coef_xt)
  var_tilde = jnp.where(adjacent, schedule.posterior_variance[t], var_tilde)
  beta = jnp.where(adjacent, schedule.betas[t], beta)
  mean = coef_x0 * x0_hat + coef_xt * xt
  var = var_tilde if variance == "beta_tilde" else beta
  z = keys.normal(key, xt.shape, xt.dtype)
  return mean + jnp.where(t_prev >= 0, jnp.sqrt(var), 0.0) * z


def ddim_step(schedule: Schedule, x0_hat, eps_hat, t, t_prev, key, eta: float = 0.0):
  """One DDIM step x_t -> x_{t_prev} (Song et al. 2021, eq. 12 with sigma of eq. 16)."""
  ab_t, ab_prev = _alpha_bar_pair(schedule, t, t_prev)
  sigma = eta * jnp.sqrt((1.0 - ab_prev) / (1.0 - ab_t)) * jnp.sqrt(1.0 - ab_t / ab_prev)
  direction = jnp.sqrt(jnp.maximum(1.0 - ab_prev - sigma**2, 0.0)) * eps_hat
  z = keys.normal(key, x0_hat.shape, x0_hat.dtype)
  return jnp.sqrt(ab_prev) * x0_hat + direction + sigma * z


def prepare(schedule: Schedule, key: jax.Array, shape, timesteps, prediction_type: str,
            x_T: jnp.ndarray | None):
  """Checks a sampler's arguments; returns (time steps [S] increasing, x_T, key for the steps).

  x_T is drawn from the first half of `key`, so every sampler (and RePaint,
  `ddpm.diffusion.inpainting`) starts from the same x_T.
  """
  parameterization.check_prediction_type(prediction_type)
  ts = np.asarray(timesteps, np.int32)
  if np.any(np.diff(ts) <= 0) or ts[0] < 0 or ts[-1] >= schedule.num_timesteps:
    raise ValueError(f"timesteps must increase within [0, {schedule.num_timesteps - 1}], got {ts}.")
  if keys.is_key_batch(key) and key.shape[0] != shape[0]:
    raise ValueError(f"{key.shape[0]} per-example keys for a batch of {shape[0]} samples.")
  init_key, loop_key = keys.split(key, 2)
  if x_T is None:
    x_T = keys.normal(init_key, shape, jnp.float32)
  elif tuple(x_T.shape) != tuple(shape):
    raise ValueError(f"x_T shape {x_T.shape} must equal the sample shape {tuple(shape)}.")
  return ts, x_T, loop_key


def model_x0_eps(denoise_fn: DenoiseFn, schedule: Schedule, prediction_type: str,
                 clip_x0: bool, x, t):
  """(x0_hat, eps_hat) of the model at (x, scalar time step t)."""
  tb = jnp.full((x.shape[0],), t, jnp.int32)
  out = denoise_fn(x, tb).astype(jnp.float32)
  return parameterization.model_output_to_x0_eps(schedule, prediction_type, out, x, tb,
                                                 clip_x0=clip_x0)


def _sample_loop(step: Callable, denoise_fn: DenoiseFn, schedule: Schedule, key: jax.Array,
                 shape, timesteps: np.ndarray, prediction_type: str, clip_x0: bool,
                 x_T: jnp.ndarray | None, return_trajectory: bool) -> SampleOutput:
  ts, x_T, loop_key = prepare(schedule, key, shape, timesteps, prediction_type, x_T)
  # Pairs (t, t_prev) from the noisy end down, t_prev = -1 on the last step.
  t_seq = jnp.asarray(ts[::-1])
  t_prev_seq = jnp.asarray(np.append(ts[::-1][1:], -1).astype(np.int32))
  step_keys = keys.split(loop_key, len(ts))

  def body(x, inputs):
    t, t_prev, k = inputs
    x0_hat, eps_hat = model_x0_eps(denoise_fn, schedule, prediction_type, clip_x0, x, t)
    x_prev = step(x, x0_hat, eps_hat, t, t_prev, k)
    return x_prev, (x_prev if return_trajectory else None)

  x0, traj = jax.lax.scan(body, x_T, (t_seq, t_prev_seq, step_keys))
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
  the reverse process from an intermediate step, e.g. to denoise (see `ddpm.diffusion.denoising`).
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


def _alpha_sigma(schedule: Schedule, t):
  """(alpha_t, sigma_t) = (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)); (1, 0) for t = -1 (data)."""
  tc = jnp.maximum(t, 0)
  return (jnp.where(t >= 0, schedule.sqrt_alpha_bars[tc], 1.0),
          jnp.where(t >= 0, schedule.sqrt_one_minus_alpha_bars[tc], 0.0))


def _lambda(schedule: Schedule, t):
  """lambda_t = log(alpha_t / sigma_t), half the log-SNR (Lu et al. 2022, Sec. 2), for t >= 0."""
  return jnp.log(schedule.sqrt_alpha_bars[t]) - jnp.log(schedule.sqrt_one_minus_alpha_bars[t])


def dpm_solver_pp_2m_step(schedule: Schedule, x, x0_hat, x0_hat_last, t, t_next, t_last):
  """One DPM-Solver++(2M) step x_t -> x_{t_next} (Lu et al. 2022, Alg. 2; scalar time steps).

      x_s = (sigma_s / sigma_t) x_t - alpha_s (exp(-h) - 1) D,   h = lambda_s - lambda_t,
      D = (1 + 1 / (2 r)) x0_hat - 1 / (2 r) x0_hat_last,  r = (lambda_t - lambda_{t_last}) / h,

  with s = t_next and x0_hat_last the model's x0_hat at t_last, the time step before t. With
  t_last = -1 (no history: the first step) D = x0_hat, the first-order step, which is the DDIM
  step with eta = 0. t_next = -1 (to data: sigma_s = 0, alpha_s = 1) returns x0_hat, the
  first-order step to sigma = 0; the second-order one is undefined there (h = inf, r = 0).
  """
  alpha_s, sigma_s = _alpha_sigma(schedule, t_next)
  _, sigma_t = _alpha_sigma(schedule, t)
  to_data = t_next < 0
  second = (t_last >= 0) & ~to_data
  lam_t = _lambda(schedule, t)
  h = _lambda(schedule, jnp.maximum(t_next, 0)) - lam_t
  h_last = lam_t - _lambda(schedule, jnp.maximum(t_last, 0))
  half_inv_r = jnp.where(second, h / (2.0 * jnp.where(second, h_last, 1.0)), 0.0)  # 1 / (2 r)
  d = x0_hat + half_inv_r * (x0_hat - x0_hat_last)
  x_next = (sigma_s / sigma_t) * x - alpha_s * jnp.expm1(-h) * d
  return jnp.where(to_data, x0_hat, x_next)


def dpm_solver_pp_2m_sample(denoise_fn: DenoiseFn, schedule: Schedule, key: jax.Array, shape, *,
                            num_steps: int = 20, spacing: str = "uniform",
                            prediction_type: str = "eps", clip_x0: bool = True,
                            x_T: jnp.ndarray | None = None, return_trajectory: bool = False,
                            timesteps=None, lower_order_final: bool = True) -> SampleOutput:
  """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) over `num_steps` respaced time steps.

  Deterministic: `key` only draws x_T (the same x_T as the other samplers with that key). One
  network evaluation per step (NFE = num_steps); the model's last x0_hat is carried in the
  scan state. The first step and the last one (to data, returning x0_hat of the smallest time
  step) are first order, the others second order (see `dpm_solver_pp_2m_step`), except that
  with `lower_order_final` and fewer than 15 steps the step into the smallest time step is
  first order too (module docstring). `clip_x0` clips each x0_hat before it enters the update.
  `timesteps` overrides num_steps/spacing, as in `ddpm_sample`.

  Uniform spacing of the linear schedule ends with a large lambda jump into t = 0 (e.g.
  1.1 -> 4.6 with 10 steps), which the second-order extrapolation handles poorly; "quadratic"
  or "trailing" spacing suits this solver better (see tests/diffusion/test_solvers.py).
  """
  if timesteps is None:
    timesteps = sampling_timesteps(schedule.num_timesteps, num_steps, spacing)
  ts, x_T, _ = prepare(schedule, key, shape, timesteps, prediction_type, x_T)
  t_seq = ts[::-1]
  t_last_seq = np.append(-1, t_seq[:-1])
  if lower_order_final and 2 <= len(ts) < 15:
    t_last_seq[-2] = -1  # No history: the step into ts[0] is first order.
  xs = tuple(jnp.asarray(a, jnp.int32) for a in (t_seq, np.append(t_seq[1:], -1), t_last_seq))

  def body(carry, inputs):
    x, x0_last = carry
    t, t_next, t_last = inputs
    x0_hat, _ = model_x0_eps(denoise_fn, schedule, prediction_type, clip_x0, x, t)
    x_next = dpm_solver_pp_2m_step(schedule, x, x0_hat, x0_last, t, t_next, t_last)
    return (x_next, x0_hat), (x_next if return_trajectory else None)

  (x0, _), traj = jax.lax.scan(body, (x_T, jnp.zeros_like(x_T)), xs)
  if return_trajectory:
    traj = jnp.concatenate([x_T[None], traj], axis=0)
  return SampleOutput(x0, traj)


def _heun_evaluations(tau: np.ndarray):
  """Heun over the decreasing time steps tau: (t_eval, t_from, t_to, corrector), one entry per
  network evaluation: step tau_i -> tau_{i+1}, i < n - 1, is a predictor (evaluated at tau_i)
  and a corrector (at the Euler point, tau_{i+1}); the last evaluation, at tau_{n-1}, is the
  step to data (-1)."""
  n = len(tau)
  t_from = np.append(np.repeat(tau[:-1], 2), tau[-1])
  t_to = np.append(np.repeat(tau[1:], 2), -1)
  corrector = np.append(np.tile([False, True], n - 1), False)
  return np.where(corrector, t_to, t_from), t_from, t_to, corrector


def evaluation_timesteps(method: str, timesteps) -> np.ndarray:
  """The time step of each network evaluation, in order, of sampler `method` over the
  increasing `timesteps`: each of them from the noisy end down for DDPM, DDIM and
  DPM-Solver++(2M) (NFE = S); for Heun two per step but the last (NFE = 2 S - 1)."""
  if method not in SAMPLERS:
    raise ValueError(f"sampler {method!r} is unknown; allowed: {', '.join(SAMPLERS)}.")
  tau = np.asarray(timesteps, np.int64)[::-1]
  return _heun_evaluations(tau)[0] if method == "heun" else tau


def heun_sample(denoise_fn: DenoiseFn, schedule: Schedule, key: jax.Array, shape, *,
                num_steps: int = 20, spacing: str = "uniform", prediction_type: str = "eps",
                clip_x0: bool = True, x_T: jnp.ndarray | None = None,
                return_trajectory: bool = False, timesteps=None) -> SampleOutput:
  """EDM's deterministic Heun sampler (Karras et al. 2022, Alg. 1, S_churn = 0) for this model.

  Works in x_hat = x_t / alpha_t with sigma_hat_t = sigma_t / alpha_t (module docstring), over
  the sigma_hat of the `num_steps` respaced time steps, then 0. Every step but the last is a
  Heun step (2 network evaluations); the last, to sigma_hat = 0, is Euler and returns x0_hat
  of the smallest time step. `num_steps` counts steps, so NFE = 2 num_steps - 1. Since the
  sigma_hat are those of the model's own time steps, no fractional t is ever needed.
  Deterministic: `key` only draws x_T. The trajectory holds x_t = alpha_t x_hat at the steps.
  As for DPM-Solver++, prefer "quadratic" or "trailing" spacing: with uniform spacing the last
  Heun step into t = 0 (sigma_hat 0.34 -> 0.01 with 10 steps) overshoots badly.

  The scan runs one iteration per network evaluation (a predictor, then a corrector, per
  Heun step), so the network is traced once, as in the other samplers.
  """
  if timesteps is None:
    timesteps = sampling_timesteps(schedule.num_timesteps, num_steps, spacing)
  ts, x_T, _ = prepare(schedule, key, shape, timesteps, prediction_type, x_T)
  tau = ts[::-1]
  n = len(tau)
  t_eval, t_from, t_to, corrector = _heun_evaluations(tau)
  xs = tuple(jnp.asarray(a, jnp.int32) for a in (t_eval, t_from, t_to)) + (jnp.asarray(corrector),)

  def sigma_hat(t):
    alpha, sigma = _alpha_sigma(schedule, t)
    return sigma / alpha

  def body(carry, inputs):
    # x_base, d_base: the point and slope of the last evaluation; x_eval: the point to evaluate.
    x_base, x_eval, d_base = carry
    t_ev, t_fr, t_t, corr = inputs
    alpha_ev, _ = _alpha_sigma(schedule, t_ev)
    x0_hat, eps_hat = model_x0_eps(denoise_fn, schedule, prediction_type, clip_x0,
                                   alpha_ev * x_eval, t_ev)
    dt = sigma_hat(t_t) - sigma_hat(t_fr)
    euler = x_eval + dt * eps_hat
    heun = x_base + dt * 0.5 * (d_base + eps_hat)
    x_new = jnp.where(corr, heun, jnp.where(t_t < 0, x0_hat, euler))
    alpha_to, _ = _alpha_sigma(schedule, t_t)
    return (x_eval, x_new, eps_hat), (alpha_to * x_new if return_trajectory else None)

  x_hat_T = x_T / _alpha_sigma(schedule, jnp.asarray(tau[0]))[0]
  (_, x0, _), out = jax.lax.scan(body, (x_hat_T, x_hat_T, jnp.zeros_like(x_T)), xs)
  traj = None
  if return_trajectory:  # x_T, then x after each corrector and after the last step.
    done = np.append(np.arange(1, 2 * n - 2, 2), 2 * n - 2)
    traj = jnp.concatenate([x_T[None], out[done]], axis=0)
  return SampleOutput(x0, traj)


SAMPLE_FNS = {"ddpm": ddpm_sample, "ddim": ddim_sample,
              "dpm_solver_pp_2m": dpm_solver_pp_2m_sample, "heun": heun_sample}
# Config-style kwargs (see `ddpm.pipelines.generation.sampler_kwargs`) a method does not take.
_UNUSED_KWARGS = {"ddpm": ("eta",), "ddim": ("variance",),
                  "dpm_solver_pp_2m": ("eta", "variance"), "heun": ("eta", "variance")}


def sample(method: str, denoise_fn: DenoiseFn, schedule: Schedule, key: jax.Array, shape,
           **kwargs) -> SampleOutput:
  """Dispatches to the sampler called `method` (one of SAMPLERS).

  kwargs a method does not use are dropped: eta (DDIM only) and variance (DDPM only).
  """
  if method not in SAMPLE_FNS:
    raise ValueError(f"sampler {method!r} is unknown; allowed: {', '.join(SAMPLERS)}.")
  for name in _UNUSED_KWARGS[method]:
    kwargs.pop(name, None)
  return SAMPLE_FNS[method](denoise_fn, schedule, key, shape, **kwargs)
