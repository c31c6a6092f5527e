r"""What the editing jobs (`ddpm.jobs.inpaint`, `ddpm.jobs.process`, `ddpm.jobs.denoise`) share.

Each restores the checkpoint as `--mode=sample` does (config.sampling.checkpoint_step and
use_ema, `ddpm.jobs.restore`), reads its images with `load_images` and writes into
workdir/edit/. With a class-conditional model the jobs use the unconditional model (the null
label) unless config.sampling.class_label names a class, towards which they are guided with
weight config.sampling.guidance_weight.

config.edit: input ("" = the first num_images images of config.data.eval_split, or an .npz
with `images` uint8 [N, H, W, C], or a folder of images read as an image folder dataset is:
recursively, in path order, fitted by config.data.resize_method), num_images, mask
(a name of `ddpm.diffusion.inpainting.MASKS`, or a PNG: nonzero = known), jump_length and
jump_n_sample (RePaint's j and r), num_steps (respaced RePaint steps, spacing
config.sampling.spacing), num_frames (strip columns and GIF frames), seed.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from ddpm.data import batching, image_files, image_folder, input_pipeline
from ddpm.jobs import restore
from ddpm.models import build
from ddpm.pipelines import denoiser


def _positive_int(name: str, value, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"config.edit.{name}={value!r} must be an integer >= {minimum}.")
  return int(value)


def validate_edit_config(config) -> None:
  """One-line ValueError for the first bad value of config.edit."""
  e = config.edit
  for name in ("num_images", "jump_length", "jump_n_sample", "num_steps"):
    _positive_int(name, e[name])
  _positive_int("num_frames", e.num_frames, 2)
  _positive_int("seed", e.seed, 0)
  if e.num_steps > config.diffusion.num_timesteps:
    raise ValueError(f"config.edit.num_steps={e.num_steps} must be <= "
                     f"config.diffusion.num_timesteps={config.diffusion.num_timesteps}.")
  if not isinstance(e.input, str):
    raise ValueError(f"config.edit.input={e.input!r} must be a path (an .npz or a folder of images) "
                     "or empty (test images).")
  if e.input and not os.path.exists(e.input):
    raise ValueError(f"config.edit.input={e.input} does not exist.")


def load_images(config) -> np.ndarray:
  """The first config.edit.num_images images, uint8 [N, H, W, C] of the model's shape."""
  e, shape = config.edit, build.image_shape(config)
  if not e.input:
    images, _ = input_pipeline.load_split_uint8(config, config.data.eval_split, e.num_images)
    return images
  if os.path.isdir(e.input):
    return image_folder.read_folder_uint8(e.input, shape, e.num_images, config.data.resize_method,
                                          "config.edit.input")
  if not e.input.endswith(".npz"):
    raise ValueError(f"config.edit.input={e.input} is neither an .npz file nor a folder of images.")
  return image_files.read_npz_images(e.input, shape, e.num_images, "config.edit.input")


@dataclasses.dataclass
class EditJob:
  config: object
  workdir: str
  params: object
  step: int
  images: np.ndarray  # uint8 [N, H, W, C]

  @staticmethod
  def load(config, workdir: str) -> tuple[str, object, int, np.ndarray]:
    """(absolute workdir, parameters, step, images): the config checked, the images read and the
    checkpoint restored as `--mode=sample` does; call after the job's `validate(config)`."""
    images = load_images(config)
    return (*restore.restore_params(config, workdir), images)

  def labels(self) -> np.ndarray | None:
    """Labels for a class-conditional model: config.sampling.class_label for every image
    (guided with config.sampling.guidance_weight), or None (-1, or an unconditional model):
    the null label, i.e. the unconditional model."""
    k, label = self.config.model.num_classes, self.config.sampling.class_label
    if k == 0 or label < 0:
      return None
    return np.full((len(self.images),), label, np.int32)

  def denoise_fn(self, model, params, labels):
    """The model as f(x_t, t), guided towards `labels` if given (see `labels`)."""
    if labels is None:
      return denoiser.make_denoise_fn(model, params)
    return denoiser.make_denoise_fn(model, params, labels, self.config.sampling.guidance_weight)

  def run_batched(self, fn, x: np.ndarray) -> np.ndarray:
    """fn(params, x [b, ...], keys [b], labels [b] or None) over `x` in batches of
    config.sampling.batch_size (the last one padded to the compiled size); image i uses key
    fold_in(edit.seed, i) and its label alone, so results do not depend on the batch size."""
    n, batch = len(x), min(self.config.sampling.batch_size, len(x))
    key = jax.random.PRNGKey(self.config.edit.seed)
    keys = np.asarray(jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n)))
    labels = self.labels()
    outs = []
    for i, xb, m in batching.padded_batches(x, batch):
      kb = batching.pad_rows(keys[i:i + batch], batch)
      yb = None if labels is None else batching.pad_rows(labels[i:i + batch], batch)
      outs.append(np.asarray(fn(self.params, xb, kb, yb))[:m])
    return np.concatenate(outs)

  def out_dir(self) -> str:
    out = os.path.join(self.workdir, "edit")
    os.makedirs(out, exist_ok=True)
    return out
