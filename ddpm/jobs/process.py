"""`--mode=process`: pictures of the forward process and of a reverse trajectory.

Restores the checkpoint as `--mode=sample` does and draws the forward process of the images of
config.edit.input and a reverse trajectory of the configured sampler
(`ddpm.visualization.process_figures`): edit/forward_step<step>.png/.gif and
edit/reverse_<sampler>_step<step>.png/.gif, config.edit.num_frames columns and frames.
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np
from absl import logging

from ddpm.data import image_arrays
from ddpm.diffusion import samplers, schedules
from ddpm.jobs import config_validation, editing
from ddpm.models import build
from ddpm.pipelines import generation
from ddpm.visualization import process_figures


@dataclasses.dataclass
class ProcessJob(editing.EditJob):

  @staticmethod
  def validate(config) -> None:
    """The config-only checks of `setup`: one-line ValueError for the first bad value."""
    config_validation.validate_config(config)
    editing.validate_edit_config(config)

  @classmethod
  def setup(cls, config, workdir: str) -> "ProcessJob":
    """Checks config.edit, reads the images, restores the checkpoint."""
    cls.validate(config)
    return cls(config, *editing.EditJob.load(config, workdir))

  def run(self) -> dict:
    c, e = self.config, self.config.edit
    schedule = schedules.schedule_from_config(c.diffusion)
    model = build.create_model(c)
    out_dir, key = self.out_dir(), jax.random.PRNGKey(e.seed)
    n = len(self.images)
    x0 = image_arrays.uint8_to_model_range(self.images)
    fwd = process_figures.forward_strip(schedule, x0, jax.random.fold_in(key, 0), e.num_frames)

    s, kwargs = c.sampling, generation.sampler_kwargs(c.sampling, c.diffusion)
    traj_fn = jax.jit(lambda p, k, y: samplers.sample(
        s.method, self.denoise_fn(model, p, y), schedule, k, x0.shape,
        return_trajectory=True, **kwargs).trajectory)
    t0 = time.time()
    traj = np.asarray(traj_fn(self.params, jax.random.fold_in(key, 1), self.labels()))
    seconds = time.time() - t0
    steps = process_figures.trajectory_steps(schedule.num_timesteps, len(traj), s.spacing)
    idx = process_figures.frame_indices(len(traj), e.num_frames)
    rev = process_figures.Frames(traj[idx], steps[idx])

    ncols = int(np.ceil(np.sqrt(n)))
    out = {}
    for kind, frames, name, title in (
        ("forward", fwd, f"forward_step{self.step}",
         f"forward process q(x_t | x_0), T={schedule.num_timesteps}"),
        ("reverse", rev, f"reverse_{generation.sampler_name(s)}_step{self.step}",
         f"reverse process, {generation.sampler_name(s)}, checkpoint step {self.step}")):
      path = os.path.join(out_dir, name)
      out[f"{kind}_png"] = process_figures.save_strip(path + ".png", frames.frames, frames.steps,
                                                      title=title)
      out[f"{kind}_gif"] = process_figures.save_gif(path + ".gif", frames.frames,
                                                    _durations(e.num_frames), ncols=ncols)
    logging.info("Process figures of %d images (%d frames; sampling took %.1f s including "
                 "compilation): %s", n, e.num_frames, seconds, ", ".join(out.values()))
    return out | {"forward": fwd, "reverse": rev}


def _durations(num_frames: int) -> list[int]:
  """200 ms a frame, the last one held for 1.5 s."""
  return [200] * (num_frames - 1) + [1500]
