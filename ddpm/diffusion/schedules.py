"""Noise schedules of the forward process and the constants derived from them.

Notation follows Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (DDPM):

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)                 (eq. 2)
    alpha_t = 1 - beta_t,   alpha_bar_t = prod_{s<=t} alpha_s
    q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)             (eq. 4)
    q(x_{t-1} | x_t, x_0) = N(mu_tilde_t(x_t, x_0), beta_tilde_t I)          (eq. 6, 7)
    mu_tilde_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
               + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t
    beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t

Time steps are 0-based integers t in {0, ..., T-1}; index t here is step t+1 of the
paper, and alpha_bar_{-1} = 1 (so x_{-1} is the data x_0).

All constants are computed in float64 with numpy (as the reference implementation does)
and stored as float32 arrays in a `Schedule` pytree, so a schedule can be passed through
`jax.jit`/`jax.pmap` like any other argument.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ("linear", "cosine", "sigmoid", "quadratic")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Schedule:
  """Precomputed constants of a discrete-time Gaussian diffusion (all shape [T]); a pytree
  whose leaves are the arrays, so it passes through jit/pmap like any argument."""

  betas: jnp.ndarray
  alphas: jnp.ndarray
  alpha_bars: jnp.ndarray
  alpha_bars_prev: jnp.ndarray  # alpha_bar_{t-1}, with alpha_bar_{-1} = 1.
  sqrt_alpha_bars: jnp.ndarray
  sqrt_one_minus_alpha_bars: jnp.ndarray
  posterior_variance: jnp.ndarray  # beta_tilde_t (eq. 7).
  # log beta_tilde_t with the t=0 entry (which is 0) replaced by beta_tilde_1, as in the
  # reference implementation, so that the log stays finite.
  posterior_log_variance_clipped: jnp.ndarray
  posterior_mean_coef_x0: jnp.ndarray  # sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)
  posterior_mean_coef_xt: jnp.ndarray  # sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)

  @property
  def num_timesteps(self) -> int:
    return self.betas.shape[-1]

  def replace(self, **changes) -> "Schedule":
    return dataclasses.replace(self, **changes)


def alpha_bar_at(schedule: Schedule, t):
  """alpha_bar_t for integer time steps t >= -1, with alpha_bar_{-1} = 1 (the data)."""
  return jnp.where(t >= 0, schedule.alpha_bars[jnp.maximum(t, 0)], 1.0)


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
  """beta_t linear in t from `beta_start` to `beta_end` (Ho et al. 2020, Sec. 4).

  The defaults are the paper's values for T = 1000. Like the reference code, other T keep
  the same endpoints (use `scale_to_1000=True` in `make_betas` to rescale them by 1000/T).
  """
  return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def quadratic_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
  """sqrt(beta_t) linear in t (the "quad" schedule of the DDPM reference code)."""
  return np.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=np.float64) ** 2


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
  """Cosine schedule of Nichol & Dhariwal 2021, eq. 17.

      alpha_bar(t) = f(t) / f(0),  f(t) = cos(((t / T + s) / (1 + s)) * pi / 2)^2
      beta_t = min(1 - alpha_bar(t + 1) / alpha_bar(t), max_beta)
  """
  steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
  f = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
  alpha_bar = f / f[0]
  betas = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
  return np.clip(betas, 0.0, max_beta)


def sigmoid_betas(
    num_timesteps: int,
    start: float = -3.0,
    end: float = 3.0,
    tau: float = 1.0,
    max_beta: float = 0.999,
) -> np.ndarray:
  """Sigmoid schedule of Jabri, Fleet & Chen 2023 ("RIN", Alg. 1 / Chen 2023).

      g(u) = sigmoid((u (end - start) + start) / tau)
      alpha_bar(u) = (g(1) - g(u)) / (g(1) - g(0)),  u = t / T
      beta_t = min(1 - alpha_bar((t+1)/T) / alpha_bar(t/T), max_beta)
  """
  sig = lambda z: 1.0 / (1.0 + np.exp(-z))
  u = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
  v_start, v_end = sig(start / tau), sig(end / tau)
  alpha_bar = (v_end - sig((u * (end - start) + start) / tau)) / (v_end - v_start)
  alpha_bar = np.clip(alpha_bar, 0.0, 1.0)
  with np.errstate(divide="ignore", invalid="ignore"):
    betas = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
  return np.clip(np.nan_to_num(betas, nan=max_beta), 0.0, max_beta)


def make_betas(name: str, num_timesteps: int, *, beta_start: float = 1e-4,
               beta_end: float = 0.02, scale_to_1000: bool = False) -> np.ndarray:
  """Returns float64 betas of shape [num_timesteps] for the schedule called `name`."""
  if not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 1:
    raise ValueError(f"num_timesteps={num_timesteps!r} must be a positive integer.")
  if name in ("linear", "quadratic"):
    if scale_to_1000:
      scale = 1000.0 / num_timesteps
      beta_start, beta_end = beta_start * scale, beta_end * scale
    if not 0.0 < beta_start <= beta_end < 1.0:
      raise ValueError(
          f"beta_start={beta_start}, beta_end={beta_end}: need 0 < beta_start <= beta_end < 1.")
    fn = linear_betas if name == "linear" else quadratic_betas
    return fn(num_timesteps, beta_start, beta_end)
  if name == "cosine":
    return cosine_betas(num_timesteps)
  if name == "sigmoid":
    return sigmoid_betas(num_timesteps)
  raise ValueError(f"beta schedule {name!r} is unknown; allowed: {', '.join(SCHEDULES)}.")


def schedule_from_betas(betas: Sequence[float] | np.ndarray) -> Schedule:
  """Builds a `Schedule` from betas in (0, 1], computing every constant in float64."""
  betas = np.asarray(betas, dtype=np.float64)
  if betas.ndim != 1 or betas.size == 0:
    raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}.")
  if not np.all((betas > 0) & (betas <= 1)):
    raise ValueError(f"betas must lie in (0, 1], got min {betas.min()} and max {betas.max()}.")
  alphas = 1.0 - betas
  alpha_bars = np.cumprod(alphas)
  alpha_bars_prev = np.append(1.0, alpha_bars[:-1])
  posterior_variance = betas * (1.0 - alpha_bars_prev) / (1.0 - alpha_bars)
  clipped = np.append(posterior_variance[1] if betas.size > 1 else betas[0],
                      posterior_variance[1:])
  f32 = lambda a: jnp.asarray(a, dtype=jnp.float32)
  return Schedule(
      betas=f32(betas),
      alphas=f32(alphas),
      alpha_bars=f32(alpha_bars),
      alpha_bars_prev=f32(alpha_bars_prev),
      sqrt_alpha_bars=f32(np.sqrt(alpha_bars)),
      sqrt_one_minus_alpha_bars=f32(np.sqrt(1.0 - alpha_bars)),
      posterior_variance=f32(posterior_variance),
      posterior_log_variance_clipped=f32(np.log(clipped)),
      posterior_mean_coef_x0=f32(np.sqrt(alpha_bars_prev) * betas / (1.0 - alpha_bars)),
      posterior_mean_coef_xt=f32(np.sqrt(alphas) * (1.0 - alpha_bars_prev) / (1.0 - alpha_bars)),
  )


def make_schedule(name: str = "linear", num_timesteps: int = 1000, **kwargs) -> Schedule:
  """`Schedule` for a named beta schedule; kwargs go to `make_betas`."""
  return schedule_from_betas(make_betas(name, num_timesteps, **kwargs))


def schedule_from_config(diffusion_config) -> Schedule:
  """`Schedule` from the `config.diffusion` block (beta_schedule, num_timesteps, ...)."""
  c = diffusion_config
  return make_schedule(c.beta_schedule, c.num_timesteps, beta_start=c.beta_start,
                       beta_end=c.beta_end, scale_to_1000=c.scale_betas_to_1000)


def sampling_timesteps(num_timesteps: int, num_steps: int, spacing: str = "uniform") -> np.ndarray:
  """An increasing sub-sequence of {0, ..., T-1} with `num_steps` entries for samplers.

  - "uniform": every T/S-th step starting at 0 (DDIM, Song et al. 2021, Sec. 4.2 / App. D.2);
    when S = T this is every step.
  - "trailing": every T/S-th step ending at T-1 (Lin et al. 2024, Table 2), so sampling
    starts from the pure-noise end of the schedule.
  - "quadratic": t_i = round((T - 1) (i / (S - 1))^2), dense at small t where the images'
    details form (DDIM's CIFAR-10 choice, Song et al. 2021, App. D.2), ending at T - 1 like
    "trailing": DDIM's own end at 0.8 T would start sampling from x_T ~ N(0, I) at a step that
    is still far from pure noise under some schedules (alpha_bar_800 = 0.093 for the cosine
    schedule, 0.0016 for the linear one). Where rounding would repeat a small step, t_i = i;
    S = 1 gives the single step T - 1.
  """
  T, S = int(num_timesteps), int(num_steps)
  if not 1 <= S <= T:
    raise ValueError(f"num_steps={num_steps} must be in [1, num_timesteps={T}].")
  if spacing == "uniform":
    ts = np.floor(np.arange(S) * (T / S)).astype(np.int64)
  elif spacing == "trailing":
    ts = (np.round(np.arange(T, 0, -T / S)) - 1).astype(np.int64)[::-1]
  elif spacing == "quadratic":
    if S == 1:
      return np.array([T - 1], np.int64)
    # (T - 1) (i / (S - 1))^2 is convex with value 0 at i = 0, so once it rounds above i its
    # increments exceed 1: max(round(.), i) increases strictly and ends at T - 1.
    q = (T - 1) * (np.arange(S) / (S - 1)) ** 2
    ts = np.maximum(np.round(q).astype(np.int64), np.arange(S))
  else:
    raise ValueError(f"timestep spacing {spacing!r} is unknown; allowed: uniform, trailing, quadratic.")
  return ts
