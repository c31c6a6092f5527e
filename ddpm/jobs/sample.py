"""`--mode=sample`: draw images from a checkpoint and write them as a PNG grid and an .npz."""

from __future__ import annotations

import dataclasses
import os

import jax
from absl import logging

from ddpm.data import image_files, image_shards
from ddpm.jobs import config_validation, restore
from ddpm.pipelines import denoiser, generation
from ddpm.runtime import storage
from ddpm.visualization import grids


@dataclasses.dataclass
class SampleJob:
  config: object
  workdir: str
  params: object
  step: int
  guide_params: object = None  # Autoguidance's guide (sampling.guide_step...), or None.

  @staticmethod
  def validate(config) -> None:
    """The config-only checks of `setup`: one-line ValueError for the first bad value."""
    config_validation.validate_config(config)

  @classmethod
  def setup(cls, config, workdir: str) -> "SampleJob":
    """Checks inputs and restores the chosen checkpoint; one-line errors for bad input."""
    cls.validate(config)
    workdir, params, step = restore.restore_params(config, workdir)
    return cls(config, workdir, params, step, restore.restore_guide_params(config, workdir, step))

  def run(self, out_dir: str | None = None) -> dict:
    c = self.config
    s = c.sampling
    out_dir = out_dir or os.path.join(self.workdir, "samples")
    logging.info("Sampling %d images with %s (%d steps, eta %s) from checkpoint step %d, seed %d%s.",
                 s.num_samples, s.method, s.num_steps, s.eta, self.step, s.seed,
                 f", class {s.class_label} (-1: all), guidance weight {s.guidance_weight}"
                 if c.model.num_classes else "")
    labels = generation.sample_labels(c, s.num_samples)
    name = f"{generation.sampler_name(s)}_seed{s.seed}_step{self.step}"
    npz = os.path.join(out_dir, name + ".npz")
    # A killed job rerun with the same command resumes from its last complete shard.
    shard_dir = os.path.join(out_dir, f"{name}_n{s.num_samples}.shards")
    images, seconds = generation.draw(c, self.params, s.num_samples, labels, shard_dir,
                                      {"checkpoint_step": self.step, "workdir": self.workdir},
                                      self.guide_params)
    extra = {} if labels is None else dict(labels=labels, guidance_weight=s.guidance_weight)
    extra |= denoiser.autoguidance_settings(s)
    try:
      os.makedirs(out_dir, exist_ok=True)
      image_files.write_npz_atomically(
          npz, images=images, method=s.method, num_steps=s.num_steps, eta=s.eta, seed=s.seed,
          checkpoint_step=self.step, seconds=seconds, num_devices=jax.local_device_count(),
          **extra)
    except OSError as e:
      raise storage.WriteError(f"cannot write {npz} ({e.strerror or e}); the {len(images)} images drawn "
                         f"so far stay in {shard_dir}, and the same command resumes from there "
                         "once there is space.") from None
    image_shards.ImageShards(shard_dir, {}).remove()
    png = os.path.join(out_dir, name + ".png")
    try:
      grids.save_grid(png, images, generation.grid_columns(c, s.num_samples))
    except OSError as e:  # The npz is the result; a grid that cannot be written is a warning.
      logging.warning("Could not write the grid %s (%s).", png, e.strerror or e)
      png = None
    logging.info("Wrote %s and %s: %d images in %.1f s (%.2f images/s, including compilation).",
                 png, npz, len(images), seconds, len(images) / seconds)
    return {"png": png, "npz": npz, "images": images, "labels": labels, "seconds": seconds}
