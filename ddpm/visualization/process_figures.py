r"""Pictures of the diffusion process: strips of x_t over t, and animated GIFs.

Frames are labelled with the paper's time step t in {0, ..., T} (Ho et al. 2020): t = 0 is
the data x_0 and t = T the noisiest step, i.e. 0-based step t - 1 of `ddpm.diffusion.schedules`.

  * `forward_strip`: the literal forward process, x_t = sqrt(alpha_bar_t) x_0 +
    sqrt(1 - alpha_bar_t) eps (q(x_t | x_0), Ho et al. 2020, eq. 4) at evenly spaced t from 0
    to T, with ONE noise draw eps shared by all frames, so a strip shows the same noise
    swamping the image step by step (corr(x_t, x_0) = sqrt(alpha_bar_t) for unit-variance data);
  * `reverse_trajectory`: a sampler's trajectory (`samplers.sample(..., return_trajectory=True)`),
    x at the top step down to the sample, subsampled to `num_frames` evenly spaced entries;
  * `save_strip`: one PNG, a row per image and a column per frame, each column titled by its t;
  * `save_gif`: an animated GIF (Pillow, loops forever), one frame per t showing every image,
    upscaled with nearest-neighbour so 28-pixel digits stay visible.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ddpm.data import image_arrays
from ddpm.diffusion import forward, samplers
from ddpm.diffusion.schedules import Schedule, sampling_timesteps
from ddpm.visualization import grids


class Frames(NamedTuple):
  frames: np.ndarray  # float32 [F, B, H, W, C] in the model's range (x_t is not clipped).
  steps: np.ndarray  # int [F]: the paper's t of each frame (0 = data, T = noisiest).


def frame_indices(length: int, num_frames: int) -> np.ndarray:
  """`num_frames` distinct indices into a sequence of `length`, evenly spaced, first and last
  included: round(linspace(0, length - 1, num_frames))."""
  if (isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer))
      or not 2 <= num_frames <= length):
    raise ValueError(f"num_frames={num_frames!r} must be an integer in [2, {length}] "
                     "(frames of a sequence of that length, first and last included).")
  return np.round(np.linspace(0, length - 1, num_frames)).astype(np.int64)


def forward_strip(schedule: Schedule, x0, key: jax.Array, num_frames: int) -> Frames:
  """x_t ~ q(x_t | x_0) at `num_frames` evenly spaced paper steps t in {0, ..., T}, one shared eps.

  Frame 0 is x_0 itself (t = 0); the last frame is x_T (0-based step T - 1).
  """
  x0 = jnp.asarray(x0, jnp.float32)
  steps = frame_indices(schedule.num_timesteps + 1, num_frames)
  eps = jax.random.normal(key, x0.shape, jnp.float32)
  frames = [x0 if s == 0 else
            forward.q_sample(schedule, x0, jnp.full((x0.shape[0],), s - 1, jnp.int32), eps)
            for s in steps]
  return Frames(np.asarray(jnp.stack(frames)), steps)


def trajectory_steps(num_timesteps: int, trajectory_length: int, spacing: str = "uniform",
                     timesteps=None) -> np.ndarray:
  """The paper's t of each entry of a sampler trajectory ([S + 1, ...]: x at the top step, then
  x after each step): ts[::-1] + 1, then 0. `timesteps` (increasing, 0-based) overrides the
  S steps `sampling_timesteps(num_timesteps, S, spacing)` the samplers use by default."""
  ts = (sampling_timesteps(num_timesteps, trajectory_length - 1, spacing) if timesteps is None
        else np.asarray(timesteps))
  if len(ts) + 1 != trajectory_length:
    raise ValueError(f"a trajectory of {trajectory_length} entries needs {trajectory_length - 1} "
                     f"time steps, got {len(ts)}.")
  return np.append(ts[::-1] + 1, 0).astype(np.int64)


def reverse_trajectory(method: str, denoise_fn, schedule: Schedule, key: jax.Array, shape,
                       num_frames: int, **sampler_kwargs) -> Frames:
  """`num_frames` evenly spaced states of `samplers.sample(method, ...)`'s trajectory, from x at
  the top step to the sample (sampler_kwargs as for `samplers.sample`)."""
  out = samplers.sample(method, denoise_fn, schedule, key, shape, return_trajectory=True,
                        **sampler_kwargs)
  traj = np.asarray(out.trajectory)
  spacing, timesteps = sampler_kwargs.get("spacing", "uniform"), sampler_kwargs.get("timesteps")
  steps = trajectory_steps(schedule.num_timesteps, len(traj), spacing, timesteps)
  idx = frame_indices(len(traj), num_frames)
  return Frames(traj[idx], steps[idx])


def to_display(frames) -> np.ndarray:
  """uint8 images from uint8 or from floats in the model's range (clipped to [-1, 1])."""
  frames = np.asarray(frames)
  if frames.dtype == np.uint8:
    return frames
  return image_arrays.to_uint8(np.clip(frames, -1.0, 1.0))


def _check_frames(frames) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 5 or frames.shape[-1] not in (1, 3):
    raise ValueError(f"frames must be [F, B, H, W, C] with C = 1 or 3, got shape {frames.shape}.")
  return to_display(frames)


def save_strip(path: str, frames, labels: Sequence, title: str | None = None,
               scale: int | None = None) -> str:
  """A PNG of frames [F, B, H, W, C]: row b shows image b at every frame, column f is titled
  labels[f] (numbers become "t=<n>"). Images are drawn `scale` times (default 64 // H) larger."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  frames = _check_frames(frames)
  f, b, h, w, _ = frames.shape
  if len(labels) != f:
    raise ValueError(f"{len(labels)} labels for {f} frames; need one label per frame.")
  scale = scale or max(1, 64 // h)
  pad = 2
  grid = grids.make_grid(np.swapaxes(frames, 0, 1).reshape((b * f, h, w, -1)), ncols=f,
                         padding=pad)
  grid = grid.repeat(scale, 0).repeat(scale, 1)
  grid = grid[..., 0] if grid.shape[-1] == 1 else grid
  dpi, top = 100, (0.45 if title else 0.25)  # Inches above the images for the labels.
  fig = plt.figure(figsize=(grid.shape[1] / dpi, grid.shape[0] / dpi + top), dpi=dpi)
  ax = fig.add_axes((0.0, 0.0, 1.0, grid.shape[0] / (grid.shape[0] + dpi * top)))
  ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
  centres = [(pad + i * (w + pad) + w / 2) * scale - 0.5 for i in range(f)]
  ax.set_xticks(centres)
  ax.set_xticklabels([f"t={x}" if isinstance(x, (int, np.integer)) else str(x) for x in labels],
                     fontsize=7)
  ax.xaxis.tick_top()
  ax.tick_params(length=0, pad=1)
  ax.set_yticks([])
  for spine in ax.spines.values():
    spine.set_visible(False)
  if title:
    fig.suptitle(title, fontsize=8, y=1.0, va="top")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.05)  # Keeps a wide title.
  plt.close(fig)
  return path


def save_gif(path: str, frames, duration_ms: int | Sequence[int] = 200, scale: int = 4,
             ncols: int | None = None) -> str:
  """An animated GIF of frames [F, B, H, W, C] (Pillow, loops forever): GIF frame f is the grid
  of all B images at frame f (`ncols` columns), upscaled `scale` times with nearest-neighbour.

  `duration_ms` is one duration or one per frame. Pillow merges consecutive identical frames
  (adding their durations), so a GIF of repeated frames holds fewer than F frames.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top

  frames = _check_frames(frames)
  if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
    raise ValueError(f"scale={scale!r} must be a positive integer.")
  durations = ([int(duration_ms)] * len(frames) if np.ndim(duration_ms) == 0
               else [int(d) for d in duration_ms])
  if len(durations) != len(frames) or min(durations) < 1:
    raise ValueError(f"duration_ms={duration_ms!r} must be a positive number of milliseconds or "
                     f"one per frame ({len(frames)}).")
  pictures = []
  for fr in frames:
    g = grids.make_grid(fr, ncols=ncols).repeat(scale, 0).repeat(scale, 1)
    pictures.append(Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=durations, loop=0)
  return path
