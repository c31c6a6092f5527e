"""`--mode=sample`: draw images from a checkpoint and write them as a PNG grid and an .npz."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from absl import logging

from ddpm.jobs import config_validation, restore
from ddpm.pipelines import generation
from ddpm.visualization import grids


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
    return cls(config, *restore.restore_params(config, workdir))

  def run(self, out_dir: str | None = None) -> dict:
    c = self.config
    s = c.sampling
    out_dir = out_dir or os.path.join(self.workdir, "samples")
    logging.info("Sampling %d images with %s (%d steps, eta %s) from checkpoint step %d, seed %d%s.",
                 s.num_samples, s.method, s.num_steps, s.eta, self.step, s.seed,
                 f", class {s.class_label} (-1: all), guidance weight {s.guidance_weight}"
                 if c.model.num_classes else "")
    labels = generation.sample_labels(c, s.num_samples)
    images, seconds = generation.draw(c, self.params, s.num_samples, labels)
    name = f"{generation.sampler_name(s)}_seed{s.seed}_step{self.step}"
    png = grids.save_grid(os.path.join(out_dir, name + ".png"), images,
                          generation.grid_columns(c, s.num_samples))
    npz = os.path.join(out_dir, name + ".npz")
    extra = {} if labels is None else dict(labels=labels, guidance_weight=s.guidance_weight)
    np.savez_compressed(npz, images=images, method=s.method, num_steps=s.num_steps, eta=s.eta,
                        seed=s.seed, checkpoint_step=self.step, seconds=seconds,
                        num_devices=jax.local_device_count(), **extra)
    logging.info("Wrote %s and %s: %d images in %.1f s (%.2f images/s, including compilation).",
                 png, npz, len(images), seconds, len(images) / seconds)
    return {"png": png, "npz": npz, "images": images, "labels": labels, "seconds": seconds}
