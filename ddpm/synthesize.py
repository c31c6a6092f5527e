r"""`--mode=synthesize`: labelled samples of a class-conditional model, for data augmentation.

Draws config.synthesize.num_per_class images of every class with config.sampling (sampler,
steps, guidance weight, seed, checkpoint) and writes them to config.synthesize.out_dir
(default workdir/synthetic) as

  * `<name>.npz`: `images` uint8 [N, H, W, C], `labels` int32 [N] (class-major order), and the
    sampler settings;
  * a TFDS dataset `tfds/<name>/1.0.0/` (split "train", features `image` and `label`), written
    by `tfds.dataset_builders.store_as_tfds_dataset`, which `tfds.load(name,
    data_dir=<out_dir>/tfds)` reads, and so does training here:
    `--config.data.dataset=<name> --config.data.data_dir=<out_dir>/tfds`;
  * `<name>.png`: the first images of each class, one row per class.

An existing dataset of that name is never overwritten: the job stops with a one-line error.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time

import numpy as np
from absl import logging

from ddpm import config_validation, image_grid, sample_job, sampling

VERSION = "1.0.0"


def write_tfds_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, name: str,
                       data_dir: str, description: str = "") -> str:
  """Writes uint8 images [N, H, W, C] and int labels [N] as the "train" split of a TFDS dataset
  `name` in `data_dir` (in that order, unshuffled); returns its directory. The dataset is built
  in a temporary directory and moved into place, so a failure leaves nothing half-written."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  final = os.path.join(data_dir, name)
  if os.path.exists(final):
    raise ValueError(f"a dataset {name!r} already exists in {data_dir}; allowed: another "
                     "config.synthesize.name, or remove it first.")
  os.makedirs(data_dir, exist_ok=True)
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=images.shape[1:]),
      "label": tfds.features.ClassLabel(num_classes=num_classes)})
  ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels.astype(np.int64)})
  with tempfile.TemporaryDirectory(dir=data_dir, prefix=f".{name}.tmp") as tmp:
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version=VERSION, features=features, split_datasets={"train": ds},
        data_dir=tmp, description=description, disable_shuffling=True)
    os.replace(os.path.join(tmp, name), final)
    shutil.rmtree(os.path.join(tmp, "downloads"), ignore_errors=True)
  return os.path.join(final, VERSION)


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

  @classmethod
  def setup(cls, config, workdir: str) -> "SynthesizeJob":
    config_validation.validate_config(config)
    validate_synthesize_config(config)
    out = cls(config, *sample_job.restore_params(config, workdir))
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
                 "checkpoint step %d.", per, k, sampling.sampler_name(s), s.guidance_weight,
                 self.step)
    t0 = time.time()
    images, _ = sampling.draw(c, self.params, len(labels), labels)
    seconds = time.time() - t0
    os.makedirs(self.out_dir, exist_ok=True)
    npz = os.path.join(self.out_dir, self.name + ".npz")
    settings = dict(sampler=sampling.sampler_name(s), guidance_weight=s.guidance_weight,
                    seed=s.seed, checkpoint_step=self.step, workdir=self.workdir)
    np.savez_compressed(npz, images=images, labels=labels, seconds=seconds, **settings)
    shown = min(per, 10)
    png = image_grid.save_grid(os.path.join(self.out_dir, self.name + ".png"),
                               images.reshape((k, per) + images.shape[1:])[:, :shown].reshape(
                                   (k * shown,) + images.shape[1:]), ncols=shown)
    tfds_dir = write_tfds_dataset(
        images, labels, k, self.name, os.path.join(self.out_dir, "tfds"),
        description=f"{per} samples per class of the ddpm model in {self.workdir} "
                    f"(step {self.step}), {settings['sampler']}, guidance weight {s.guidance_weight}.")
    logging.info("Wrote %d images (%.1f s, %.2f images/s): %s, %s and the TFDS dataset %s; train "
                 "on it with --config.data.dataset=%s --config.data.data_dir=%s.", len(images),
                 seconds, len(images) / seconds, npz, png, tfds_dir, self.name,
                 os.path.join(self.out_dir, "tfds"))
    return {"npz": npz, "png": png, "tfds_dir": tfds_dir, "images": images, "labels": labels,
            "seconds": seconds}
