"""`--mode=sample`: draw images from a checkpoint and write them as a PNG grid and an .npz."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from absl import logging

from ddpm import checkpointing, config_validation, image_grid, sampling, train


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
    return cls(config, *restore_params(config, workdir))

  def run(self, out_dir: str | None = None) -> dict:
    c = self.config
    s = c.sampling
    out_dir = out_dir or os.path.join(self.workdir, "samples")
    logging.info("Sampling %d images with %s (%d steps, eta %s) from checkpoint step %d, seed %d%s.",
                 s.num_samples, s.method, s.num_steps, s.eta, self.step, s.seed,
                 f", class {s.class_label} (-1: all), guidance weight {s.guidance_weight}"
                 if c.model.num_classes else "")
    labels = sampling.sample_labels(c, s.num_samples)
    images, seconds = sampling.draw(c, self.params, s.num_samples, labels)
    name = f"{sampling.sampler_name(s)}_seed{s.seed}_step{self.step}"
    png = image_grid.save_grid(os.path.join(out_dir, name + ".png"), images,
                               sampling.grid_columns(c, s.num_samples))
    npz = os.path.join(out_dir, name + ".npz")
    extra = {} if labels is None else dict(labels=labels, guidance_weight=s.guidance_weight)
    np.savez_compressed(npz, images=images, method=s.method, num_steps=s.num_steps, eta=s.eta,
                        seed=s.seed, checkpoint_step=self.step, seconds=seconds,
                        num_devices=jax.local_device_count(), **extra)
    logging.info("Wrote %s and %s: %d images in %.1f s (%.2f images/s, including compilation).",
                 png, npz, len(images), seconds, len(images) / seconds)
    return {"png": png, "npz": npz, "images": images, "labels": labels, "seconds": seconds}


def restore_params(config, workdir: str) -> tuple[str, object, int]:
  """(absolute workdir, parameters, step) of the checkpoint chosen by config.sampling
  (checkpoint_step, -1: the newest readable one; use_ema); one-line errors when there is none.

  Only the parameters are read (`checkpointing.restore_params`), so checkpoints of any
  optimizer setup, fine-tuning runs with frozen parameters included, can be sampled from.
  """
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(checkpointing.checkpoint_dir(workdir)):
    raise ValueError(f"--workdir={workdir} has no checkpoints/ directory; train first "
                     f"(--mode=train) or point --workdir at a trained run.")
  template = jax.eval_shape(lambda: train.init_params(train.create_model(config),
                                                      jax.random.PRNGKey(0), train.image_shape(config)))
  meta = checkpointing.make_meta(template, config.model, train.image_shape(config))
  manager = checkpointing.create_manager(workdir, max_to_keep=None)
  which = "ema_params" if config.sampling.use_ema else "params"
  try:
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
      raise ValueError(f"--workdir={workdir} holds no checkpoint; train first (--mode=train).")
    if config.sampling.checkpoint_step >= 0:
      step = config.sampling.checkpoint_step
      return workdir, checkpointing.restore_params(manager, step, template, meta, which), step
    for step in steps:
      try:
        return workdir, checkpointing.restore_params(manager, step, template, meta, which), step
      except checkpointing.CheckpointMismatchError:
        raise
      except Exception as e:  # A damaged checkpoint: orbax/TensorStore raise many types.
        logging.warning("Checkpoint step %d is unreadable (%s); trying the next older one.",
                        step, str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
    raise ValueError(f"--workdir={workdir}: no checkpoint could be read (steps {steps}).")
  finally:
    manager.close()
