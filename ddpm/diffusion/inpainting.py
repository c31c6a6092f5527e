r"""Inpainting with an unconditional DDPM: RePaint (pure, jit-able functions).

RePaint (Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion Probabilistic
Models", Alg. 1) conditions an unconditionally trained model on the known pixels x_known
(mask m = 1 where known, 0 in the hole) by running the reverse process and, at every step
t -> s, replacing the known region by a forward-process draw from the known image:

  x_s^known   = sqrt(alpha_bar_s) x_known + sqrt(1 - alpha_bar_s) eps,  eps ~ N(0, I)
                                                                        (q(x_s | x_0), eq. 4)
  x_s^unknown = mu(x0_hat(x_t, t), x_t) + sigma z                       (DDPM step, Alg. 2)
  x_s         = m * x_s^known + (1 - m) * x_s^unknown                   (Alg. 1, line 8)

with alpha_bar_{-1} = 1, so the last step (to s = -1, the data) is noise-free on both parts:
x^known = x_known exactly. To harmonize the two parts, RePaint "resamples": it goes back up,
diffusing x_s forward again,

  x_t = sqrt(alpha_bar_t / alpha_bar_s) x_s + sqrt(1 - alpha_bar_t / alpha_bar_s) z
                                                                        (Alg. 1, line 10)

which for adjacent full steps s = t - 1 is q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
(Ho et al. 2020, eq. 2), and for respaced steps the same with the pairwise ratio
alpha_{t|s} = alpha_bar_t / alpha_bar_s (Nichol & Dhariwal 2021, Sec. 4).

Rather than Alg. 1's one-step back-and-forth, the paper's experiments jump back j steps at a
time, r - 1 times per block (Sec. 4.2: "jump length" j = 10 and "resampling" r = 10
with 250 respaced steps); `jump_schedule` is the reference code's `get_schedule_jump` with its
extra options (n_sample, jump2, jump3) left at their defaults. The whole walk, downs and ups, is
a static sequence of (t_from, t_to) pairs computed in numpy and run by one `lax.scan` (a
`lax.cond` inside picks the move), so the network is traced once whatever j and r are. Only
down moves call the network: `num_network_calls` = S + J (r - 1) j for S steps, where
J = max(0, ceil(S / j) - 1) is the number of jump points.

Masks here use one convention: 1 = known pixel, 0 = hole to fill. The built-in masks of
`make_mask` are named after their hole ("center_box" inpaints a centred box).

Time steps are 0-based (see `ddpm.diffusion.schedules`); x at t = -1 is the data.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ddpm.diffusion import keys, samplers
from ddpm.diffusion.schedules import Schedule, alpha_bar_at, sampling_timesteps

DenoiseFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]
MASKS = ("center_box", "bottom_half", "top_half", "left_half", "random_pixels:<fraction>",
         "every_other_line")


class InpaintOutput(NamedTuple):
  samples: jnp.ndarray  # x_0, [B, ...]
  trajectory: jnp.ndarray | None  # [M + 1, B, ...]: x_T, then x after each of the M moves.


# ----------------------------------------------------------------- the jump schedule

def _check_positive_int(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name}={value!r} must be a positive integer.")
  return int(value)


def jump_schedule(num_steps: int, jump_length: int = 10, jump_n_sample: int = 10) -> np.ndarray:
  """Indices into the S = `num_steps` sampling steps that x visits, from S - 1 down to -1.

  The reference code's `get_schedule_jump` (RePaint repository, guided_diffusion/scheduler.py,
  with n_sample = 1 and no jump2/jump3): walk down one step at a time; on reaching a jump point
  i in {0, j, 2j, ...} with i < S - j, go back up j steps, r - 1 times per point, then walk on.
  Consecutive entries differ by exactly 1. r = 1 (or j >= S) is the plain chain S-1, ..., 0, -1.
  """
  s = _check_positive_int("num_steps", num_steps)
  j = _check_positive_int("jump_length", jump_length)
  r = _check_positive_int("jump_n_sample", jump_n_sample)
  jumps = {i: r - 1 for i in range(0, s - j, j)}
  t, ts = s, []
  while t >= 1:
    t -= 1
    ts.append(t)
    if jumps.get(t, 0) > 0:
      jumps[t] -= 1
      for _ in range(j):
        t += 1
        ts.append(t)
  ts.append(-1)
  return np.asarray(ts, np.int32)


def num_network_calls(num_steps: int, jump_length: int = 10, jump_n_sample: int = 10) -> int:
  """S + J (r - 1) j network calls (one per down move), J = max(0, ceil(S / j) - 1) jump points."""
  s = _check_positive_int("num_steps", num_steps)
  j = _check_positive_int("jump_length", jump_length)
  r = _check_positive_int("jump_n_sample", jump_n_sample)
  return s + max(0, -(-s // j) - 1) * (r - 1) * j


def repaint_timesteps(num_timesteps: int, num_steps: int | None = None, jump_length: int = 10,
                      jump_n_sample: int = 10, spacing: str = "uniform") -> np.ndarray:
  """The time steps (0-based, -1 = data) x visits: `jump_schedule` mapped through the S respaced
  steps of `ddpm.diffusion.schedules.sampling_timesteps`. Starts at the top step, ends at -1."""
  ts = sampling_timesteps(num_timesteps, num_steps or num_timesteps, spacing)
  idx = jump_schedule(len(ts), jump_length, jump_n_sample)
  return np.where(idx >= 0, ts[np.maximum(idx, 0)], -1).astype(np.int32)


# ----------------------------------------------------------------- RePaint

def check_mask(mask, x_shape) -> jnp.ndarray:
  """`mask` as float32 [B or 1, H, W, C or 1] broadcasting against x of `x_shape` [B, H, W, C]."""
  m = jnp.asarray(mask, jnp.float32)
  if m.ndim == 3:
    m = m[None]
  try:
    ok = m.ndim == 4 and np.broadcast_shapes(m.shape, tuple(x_shape)) == tuple(x_shape)
  except ValueError:
    ok = False
  if not ok:
    raise ValueError(f"mask shape {tuple(jnp.shape(mask))} does not broadcast to the images "
                     f"{tuple(x_shape)}; allowed: [B, H, W, 1 or C] or [H, W, 1 or C].")
  return m


def repaint(denoise_fn: DenoiseFn, schedule: Schedule, x_known: jnp.ndarray, mask, key: jax.Array,
            *, num_steps: int | None = None, jump_length: int = 10, jump_n_sample: int = 10,
            spacing: str = "uniform", variance: str = "beta_tilde", prediction_type: str = "eps",
            clip_x0: bool = True, return_trajectory: bool = False) -> InpaintOutput:
  """RePaint inpainting (Lugmayr et al. 2022, Alg. 1 with the jump schedule of Sec. 4.2).

  x_known [B, H, W, C] in [-1, 1] (its values in the hole are never used); mask 1 = known,
  0 = hole, [B, H, W, 1 or C] or [H, W, 1 or C] (soft values blend the two parts). The walk
  is `repaint_timesteps(T, num_steps, jump_length, jump_n_sample, spacing)`: down moves are
  the combined step of the module docstring (DDPM step with `variance`, beta_tilde or beta,
  for the hole), up moves diffuse forward by alpha_bar_t / alpha_bar_s. num_steps (default T)
  respaces the chain; jump_n_sample = 1 means no resampling. x_T ~ N(0, I) is drawn from
  `key` as the samplers draw it (the same x_T as `ddpm_sample` with that key).

  `key` is one key, or one per example ([B] typed or [B, 2] raw: example i then depends on key
  i alone). With a binary mask the known region of the result equals x_known exactly: the last
  move (to t = -1) takes x^known = 1 * x_known + 0 * eps. The trajectory ([M + 1, B, ...], all
  M moves) is large for the paper's settings (M = 4570 for S = 250, j = r = 10).
  """
  if variance not in samplers.VARIANCES:
    raise ValueError(f"DDPM variance {variance!r} is unknown; allowed: "
                     f"{', '.join(samplers.VARIANCES)}.")
  x_known = jnp.asarray(x_known, jnp.float32)
  m = check_mask(mask, x_known.shape)
  t_path = repaint_timesteps(schedule.num_timesteps, num_steps, jump_length, jump_n_sample,
                             spacing)
  ts = np.unique(t_path[t_path >= 0])
  _, x_T, loop_key = samplers.prepare(schedule, key, x_known.shape, ts, prediction_type, None)
  t_from, t_to = jnp.asarray(t_path[:-1]), jnp.asarray(t_path[1:])
  move_keys = keys.split(loop_key, len(t_path) - 1)

  def down(x, t, s, k):
    k_known, k_step = keys.split(k, 2)
    ab_s = alpha_bar_at(schedule, s)
    noise = keys.normal(k_known, x.shape, x.dtype)
    known = jnp.sqrt(ab_s) * x_known + jnp.sqrt(1.0 - ab_s) * noise
    x0_hat, _ = samplers.model_x0_eps(denoise_fn, schedule, prediction_type, clip_x0, x, t)
    unknown = samplers.ddpm_step(schedule, x0_hat, x, t, s, k_step, variance)
    return m * known + (1.0 - m) * unknown

  def up(x, s, t, k):
    ratio = alpha_bar_at(schedule, t) / alpha_bar_at(schedule, s)
    return jnp.sqrt(ratio) * x + jnp.sqrt(1.0 - ratio) * keys.normal(k, x.shape, x.dtype)

  def body(x, inputs):
    a, b, k = inputs
    x_new = jax.lax.cond(b < a, down, up, x, a, b, k)
    return x_new, (x_new if return_trajectory else None)

  x0, traj = jax.lax.scan(body, x_T, (t_from, t_to, move_keys))
  if return_trajectory:
    traj = jnp.concatenate([x_T[None], traj], axis=0)
  return InpaintOutput(x0, traj)


# ----------------------------------------------------------------- masks

def _hw(image_shape) -> tuple[int, int]:
  shape = tuple(int(s) for s in image_shape)
  if len(shape) not in (2, 3) or min(shape) < 1:
    raise ValueError(f"image_shape={tuple(image_shape)} must be (H, W) or (H, W, C).")
  return shape[0], shape[1]


def make_mask(name: str, image_shape, seed: int = 0) -> np.ndarray:
  """A built-in mask, float32 [H, W, 1], 1 = known; the name says where the hole is.

  center_box: a centred box of half the height and width (a quarter of the pixels);
  bottom_half / top_half / left_half: that half (rows H//2.. / ..H//2, columns ..W//2);
  random_pixels:<fraction>: exactly round(fraction H W) pixels, drawn with numpy's
  default_rng(seed); every_other_line: the odd rows (RePaint's "alternating lines").
  """
  h, w = _hw(image_shape)
  m = np.ones((h, w), np.float32)
  if name == "center_box":
    m[h // 4:h // 4 + h // 2, w // 4:w // 4 + w // 2] = 0
  elif name == "bottom_half":
    m[h // 2:] = 0
  elif name == "top_half":
    m[:h // 2] = 0
  elif name == "left_half":
    m[:, :w // 2] = 0
  elif name == "every_other_line":
    m[1::2] = 0
  elif isinstance(name, str) and name.startswith("random_pixels:"):
    text = name.split(":", 1)[1]
    try:
      frac = float(text)
    except ValueError:
      frac = float("nan")
    if not 0.0 <= frac <= 1.0:
      raise ValueError(f"mask {name!r}: the fraction {text!r} of missing pixels must be a "
                       "number in [0, 1].")
    hole = np.random.default_rng(seed).permutation(h * w)[:int(round(frac * h * w))]
    m.flat[hole] = 0
  else:
    raise ValueError(f"mask {name!r} is unknown; allowed: {', '.join(MASKS)}.")
  return m[..., None]
