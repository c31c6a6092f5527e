"""`--mode=sample`: draw images from a checkpoint and write them as a PNG grid and an .npz."""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np
from absl import logging
from flax import jax_utils

from ddpm import checkpointing, config_validation, image_grid, sampling, schedules, train


@dataclasses.dataclass
class SampleJob:
  config: object
  workdir: str
  params: object
  step: int

  @classmethod
  def setup(cls, config, workdir: str) -> "SampleJob":
    """Checks inputs and restores the chosen checkpoint; one-line errors for bad input."""
    config_validation.validate_config(config)
    workdir = os.path.abspath(workdir)
    ckpt_dir = checkpointing.checkpoint_dir(workdir)
    if not os.path.isdir(ckpt_dir):
      raise ValueError(f"--workdir={workdir} has no checkpoints/ directory; train first "
                       f"(--mode=train) or point --workdir at a trained run.")
    _, _, _, state, meta = train.initial_state(config)
    manager = checkpointing.create_manager(workdir, max_to_keep=None)
    if manager.latest_step() is None:
      raise ValueError(f"--workdir={workdir} holds no checkpoint; train first (--mode=train).")
    step = config.sampling.checkpoint_step
    state = checkpointing.restore(manager, state, meta, None if step < 0 else step)
    manager.close()
    params = state.ema_params if config.sampling.use_ema else state.params
    return cls(config, workdir, params, int(state.step))

  def run(self, out_dir: str | None = None) -> dict:
    c = self.config
    s = c.sampling
    out_dir = out_dir or os.path.join(self.workdir, "samples")
    n_dev = jax.local_device_count()
    per_device = -(-min(s.batch_size, s.num_samples) // n_dev)
    model = train.create_model(c)
    schedule = schedules.schedule_from_config(c.diffusion)
    fn = sampling.make_generate_fn(model, schedule, s, c.diffusion, per_device,
                                   train.image_shape(c))
    logging.info("Sampling %d images with %s (%d steps, eta %s) from checkpoint step %d, seed %d.",
                 s.num_samples, s.method, s.num_steps, s.eta, self.step, s.seed)
    t0 = time.time()
    images = sampling.generate(fn, jax_utils.replicate(self.params, axis_name=train.AXIS), jax.random.PRNGKey(s.seed),
                               s.num_samples, per_device)
    seconds = time.time() - t0
    name = f"{sampling.sampler_name(s)}_seed{s.seed}_step{self.step}"
    png = image_grid.save_grid(os.path.join(out_dir, name + ".png"), images)
    npz = os.path.join(out_dir, name + ".npz")
    np.savez_compressed(npz, images=images, method=s.method, num_steps=s.num_steps, eta=s.eta,
                        seed=s.seed, checkpoint_step=self.step, seconds=seconds,
                        num_devices=jax.local_device_count())
    logging.info("Wrote %s and %s: %d images in %.1f s (%.2f images/s, including compilation).",
                 png, npz, len(images), seconds, len(images) / seconds)
    return {"png": png, "npz": npz, "images": images, "seconds": seconds}
