r"""`--mode=synthesize`: labelled samples of a class-conditional model, for data augmentation.

Draws config.synthesize.num_per_class images of every class with config.sampling (sampler,
steps, guidance weight, seed, checkpoint) and writes them to config.synthesize.out_dir
(default workdir/synthetic) as

  * `<name>.npz`: `images` uint8 [N, H, W, C], `labels` int32 [N] (class-major order), and the
    sampler settings;
  * a TFDS dataset `tfds/<name>/1.0.0/` (split "train", features `image` and `label`), written
    by `ddpm.data.tfds_writer` (`tfds.dataset_builders.store_as_tfds_dataset`), which
    `tfds.load(name, data_dir=<out_dir>/tfds)` reads, and so does training here:
    `--config.data.dataset=<name> --config.data.data_dir=<out_dir>/tfds`;
  * `<name>.png`: the first images of each class, one row per class.

An existing dataset of that name is never overwritten: the job stops with a one-line error.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
from absl import logging

from ddpm.data import tfds_writer
from ddpm.jobs import config_validation, restore
from ddpm.pipelines import generation
from ddpm.visualization import grids


def validate_synthesize_config(config) -> None:
  y = config.synthesize
  if config.model.num_classes == 0:
    raise ValueError("--mode=synthesize needs a class-conditional model "
                     "(config.model.num_classes > 0); this one is unconditional.")
  n = y.num_per_class
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f"config.synthesize.num_per_class={n!r} must be a positive integer.")
  name = y.name or f"{config.data.dataset}_synthetic"
  if not name.replace("_", "").isalnum() or not name[0].isalpha() or name != name.lower():
    raise ValueError(f"config.synthesize.name={name!r} is not a valid TFDS dataset name; "
                     "allowed: lower-case letters, digits and '_', starting with a letter.")


@dataclasses.dataclass
class SynthesizeJob:
  config: object
  workdir: str
  params: object
  step: int
  guide_params: object = None  # Autoguidance's guide (sampling.guide_step...), or None.

  @staticmethod
  def validate(config) -> None:
    """The config-only checks of `setup`: one-line ValueError for the first bad value."""
    config_validation.validate_config(config)
    validate_synthesize_config(config)

  @classmethod
  def setup(cls, config, workdir: str) -> "SynthesizeJob":
    cls.validate(config)
    workdir, params, step = restore.restore_params(config, workdir)
    out = cls(config, workdir, params, step, restore.restore_guide_params(config, workdir, step))
    if os.path.exists(os.path.join(out.out_dir, "tfds", out.name)):  # Fail before any work.
      raise ValueError(f"a dataset {out.name!r} already exists in {out.out_dir}/tfds; allowed: "
                       "another config.synthesize.name, or remove it first.")
    return out

  @property
  def name(self) -> str:
    return self.config.synthesize.name or f"{self.config.data.dataset}_synthetic"

  @property
  def out_dir(self) -> str:
    return os.path.abspath(self.config.synthesize.out_dir or os.path.join(self.workdir, "synthetic"))

  def run(self) -> dict:
    c, s = self.config, self.config.sampling
    k, per = c.model.num_classes, c.synthesize.num_per_class
    labels = np.repeat(np.arange(k, dtype=np.int32), per)
    logging.info("Synthesizing %d images of each of %d classes with %s, guidance weight %g, "
                 "checkpoint step %d.", per, k, generation.sampler_name(s), s.guidance_weight,
                 self.step)
    t0 = time.time()
    images, _ = generation.draw(c, self.params, len(labels), labels,
                                guide_params=self.guide_params)
    seconds = time.time() - t0
    os.makedirs(self.out_dir, exist_ok=True)
    npz = os.path.join(self.out_dir, self.name + ".npz")
    settings = dict(sampler=generation.sampler_name(s), guidance_weight=s.guidance_weight,
                    seed=s.seed, checkpoint_step=self.step, workdir=self.workdir)
    np.savez_compressed(npz, images=images, labels=labels, seconds=seconds, **settings)
    shown = min(per, 10)
    png = grids.save_grid(os.path.join(self.out_dir, self.name + ".png"),
                          images.reshape((k, per) + images.shape[1:])[:, :shown].reshape(
                              (k * shown,) + images.shape[1:]), ncols=shown)
    tfds_dir = tfds_writer.write_tfds_dataset(
        images, labels, k, self.name, os.path.join(self.out_dir, "tfds"),
        description=f"{per} samples per class of the ddpm model in {self.workdir} "
                    f"(step {self.step}), {settings['sampler']}, guidance weight {s.guidance_weight}.")
    logging.info("Wrote %d images (%.1f s, %.2f images/s): %s, %s and the TFDS dataset %s; train "
                 "on it with --config.data.dataset=%s --config.data.data_dir=%s.", len(images),
                 seconds, len(images) / seconds, npz, png, tfds_dir, self.name,
                 os.path.join(self.out_dir, "tfds"))
    return {"npz": npz, "png": png, "tfds_dir": tfds_dir, "images": images, "labels": labels,
            "seconds": seconds}
