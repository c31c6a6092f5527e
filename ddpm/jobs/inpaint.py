"""`--mode=inpaint`: fill the hole of a mask with RePaint (Lugmayr et al. 2022).

Restores the checkpoint as `--mode=sample` does and fills the hole of config.edit.mask (a name
of `ddpm.diffusion.inpainting.MASKS`, or a PNG: nonzero = known) in the images of
config.edit.input with `ddpm.diffusion.inpainting.repaint`; writes
edit/inpaint_<mask>_step<step>.png (rows: original, masked input with the hole grey,
inpainted) and .npz, logging the MSE against the original on the known region (0: it is pasted
back exactly) and on the hole. config.edit: jump_length and jump_n_sample (RePaint's j and r),
num_steps (respaced RePaint steps, spacing config.sampling.spacing), seed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ddpm.data import image_arrays, image_files
from ddpm.diffusion import inpainting, schedules
from ddpm.jobs import config_validation, editing
from ddpm.models import build
from ddpm.visualization import grids


def load_mask(config) -> tuple[np.ndarray, str]:
  """(mask float32 [H, W, 1], 1 = known; a file-name-safe name) from config.edit.mask."""
  spec, hw = config.edit.mask, build.image_shape(config)[:2]
  if isinstance(spec, str) and spec.lower().endswith(".png"):
    mask = image_files.mask_from_image(spec, hw)
    name = os.path.splitext(os.path.basename(spec))[0]
  else:
    try:
      mask = inpainting.make_mask(spec, hw)
    except ValueError as err:
      raise ValueError(f"config.edit.mask: {err} Or a .png path (nonzero = known).") from None
    name = spec
  return mask, re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


@dataclasses.dataclass
class InpaintJob(editing.EditJob):
  mask: np.ndarray = None  # float32 [H, W, 1], 1 = known.
  mask_name: str = ""

  @staticmethod
  def validate(config) -> None:
    """The config-only checks of `setup`: one-line ValueError for the first bad value."""
    config_validation.validate_config(config)
    editing.validate_edit_config(config)

  @classmethod
  def setup(cls, config, workdir: str) -> "InpaintJob":
    """Checks config.edit, reads the images and the mask, restores the checkpoint."""
    cls.validate(config)
    mask, name = load_mask(config)
    return cls(config, *editing.EditJob.load(config, workdir), mask, name)

  def run(self) -> dict:
    c, e = self.config, self.config.edit
    schedule = schedules.schedule_from_config(c.diffusion)
    model = build.create_model(c)
    kwargs = dict(num_steps=e.num_steps, jump_length=e.jump_length, jump_n_sample=e.jump_n_sample,
                  spacing=c.sampling.spacing, variance=c.sampling.variance,
                  prediction_type=c.diffusion.prediction_type, clip_x0=c.sampling.clip_x0)
    mask = jnp.asarray(self.mask)
    fn = jax.jit(lambda p, x, k, y: inpainting.repaint(
        self.denoise_fn(model, p, y), schedule, x, mask, k, **kwargs).samples)
    calls = inpainting.num_network_calls(e.num_steps, e.jump_length, e.jump_n_sample)
    logging.info("Inpainting %d images (mask %s, %.1f%% known) with RePaint: %d steps, j=%d, "
                 "r=%d, %d network calls per image, checkpoint step %d.", len(self.images),
                 self.mask_name, 100 * self.mask.mean(), e.num_steps, e.jump_length,
                 e.jump_n_sample, calls, self.step)
    n = len(self.images)
    t0 = time.time()
    inpainted = image_arrays.to_uint8(self.run_batched(
        fn, np.asarray(image_arrays.uint8_to_model_range(self.images))))
    seconds = time.time() - t0
    known = np.broadcast_to(self.mask > 0.5, self.images.shape)
    err = (inpainted.astype(np.float64) - self.images) / 255.0
    mse_known = float(np.mean(err[known] ** 2)) if known.any() else float("nan")
    mse_hole = float(np.mean(err[~known] ** 2)) if (~known).any() else float("nan")
    masked = np.where(known, self.images, np.uint8(128))
    name = f"inpaint_{self.mask_name}_step{self.step}"
    out_dir = self.out_dir()
    png = grids.save_grid(os.path.join(out_dir, name + ".png"),
                          np.concatenate([self.images, masked, inpainted]), ncols=n,
                          scale=max(1, 64 // self.images.shape[1]))
    npz = os.path.join(out_dir, name + ".npz")
    np.savez_compressed(npz, original=self.images, mask=self.mask, masked=masked,
                        inpainted=inpainted, mse_known=mse_known, mse_hole=mse_hole,
                        num_steps=e.num_steps, jump_length=e.jump_length,
                        jump_n_sample=e.jump_n_sample, network_calls=calls, seed=e.seed,
                        checkpoint_step=self.step, seconds=seconds)
    logging.info("Inpainted %d images in %.1f s (including compilation): MSE vs the original "
                 "([0, 1] scale) %.3g on the known region, %.4f on the hole. Wrote %s and %s.",
                 n, seconds, mse_known, mse_hole, png, npz)
    return {"png": png, "npz": npz, "inpainted": inpainted, "mse_known": mse_known,
            "mse_hole": mse_hole, "network_calls": calls, "seconds": seconds}
