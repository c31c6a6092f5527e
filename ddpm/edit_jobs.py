r"""`--mode=inpaint`, `--mode=process` and `--mode=denoise`: jobs that use a checkpoint on images.

Both restore the checkpoint as `--mode=sample` does (config.sampling.checkpoint_step and
use_ema, see `ddpm.sample_job.SampleJob.setup`) and write into workdir/edit/:

  * `InpaintJob` fills the hole of a mask with RePaint (`ddpm.inpainting.repaint`, Lugmayr et
    al. 2022) and writes inpaint_<mask>_step<step>.png (rows: original, masked input with the
    hole grey, inpainted) and .npz, logging the MSE against the original on the known region
    (0: it is pasted back exactly) and on the hole;
  * `ProcessJob` draws the forward process of the images and a reverse trajectory of the
    configured sampler (`ddpm.process_figures`): forward_step<step>.png/.gif and
    reverse_<sampler>_step<step>.png/.gif;
  * `DenoiseJob` denoises images carrying Gaussian noise (added here, or already in them) from
    the step of matching noise level, or runs SDEdit (Meng et al. 2022) from strength * T, with
    config.sampling's sampler, and writes <denoise|sdedit...>_sigma<s>_<sampler>_step<step>.png
    (rows: original, noisy, denoised, with PSNR when the originals are known) and .npz.

With a class-conditional model the jobs use the unconditional model (the null label) unless
config.sampling.class_label names a class, towards which they are guided with weight
config.sampling.guidance_weight.

config.edit: input ("" = the first num_images images of config.data.eval_split, or an .npz
with `images` uint8 [N, H, W, C], or a folder of PNGs, read in name order), num_images, mask
(a name of `ddpm.inpainting.MASKS`, or a PNG: nonzero = known), jump_length and jump_n_sample
(RePaint's j and r), num_steps (respaced RePaint steps, spacing config.sampling.spacing),
num_frames (strip columns and GIF frames), seed.
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

from ddpm import (denoising, features as features_lib, image_grid, inpainting, input_pipeline,
                  likelihood, metrics, process_figures, samplers, sample_job, sampling, schedules,
                  train)


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
    raise ValueError(f"config.edit.input={e.input!r} must be a path (an .npz or a folder of PNGs) "
                     "or empty (test images).")
  if e.input and not os.path.exists(e.input):
    raise ValueError(f"config.edit.input={e.input} does not exist.")


def _noise_checks(config) -> None:
  e = config.edit
  if not isinstance(e.noise_sigma, (int, float)) or not 0.0 <= e.noise_sigma <= 10.0:
    raise ValueError(f"config.edit.noise_sigma={e.noise_sigma!r} must be in [0, 10] (noise std "
                     "on the [0, 1] pixel scale).")
  if not isinstance(e.strength, (int, float)) or not 0.0 <= e.strength <= 1.0:
    raise ValueError(f"config.edit.strength={e.strength!r} must be in [0, 1] (0: start at the "
                     "step matching edit.noise_sigma; > 0: SDEdit from t0 = strength * T).")
  if e.strength == 0 and e.noise_sigma == 0:
    raise ValueError("config.edit.noise_sigma=0 and config.edit.strength=0 leave nothing to do; "
                     "allowed: noise_sigma > 0 (denoise) or strength > 0 (SDEdit).")


def load_images(config) -> np.ndarray:
  """The first config.edit.num_images images, uint8 [N, H, W, C] of the model's shape."""
  e, shape = config.edit, train.image_shape(config)
  if not e.input:
    images, _ = input_pipeline.load_split_uint8(config, config.data.eval_split, e.num_images)
    return images
  if os.path.isdir(e.input):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    names = sorted(n for n in os.listdir(e.input) if n.lower().endswith(".png"))[:e.num_images]
    if not names:
      raise ValueError(f"config.edit.input={e.input} holds no .png files.")
    images = []
    for n in names:
      with Image.open(os.path.join(e.input, n)) as im:
        a = np.asarray(im.convert("L" if shape[2] == 1 else "RGB"))
      if a.shape[:2] != shape[:2]:
        raise ValueError(f"config.edit.input: {n} is {a.shape[0]}x{a.shape[1]}, the model's "
                         f"images are {shape[0]}x{shape[1]}.")
      images.append(a.reshape(shape))
    return np.stack(images)
  if not e.input.endswith(".npz"):
    raise ValueError(f"config.edit.input={e.input} is neither an .npz file nor a folder of PNGs.")
  with np.load(e.input) as f:
    if "images" not in f.files:
      raise ValueError(f"config.edit.input={e.input} has no 'images' array (has: "
                       f"{', '.join(f.files)}).")
    images = f["images"][:e.num_images]
  return features_lib.check_images(images, shape, name=f"images in {e.input}")


def load_mask(config) -> tuple[np.ndarray, str]:
  """(mask float32 [H, W, 1], 1 = known; a file-name-safe name) from config.edit.mask."""
  spec, hw = config.edit.mask, train.image_shape(config)[:2]
  if isinstance(spec, str) and spec.lower().endswith(".png"):
    mask = inpainting.mask_from_image(spec, hw)
    name = os.path.splitext(os.path.basename(spec))[0]
  else:
    try:
      mask = inpainting.make_mask(spec, hw)
    except ValueError as err:
      raise ValueError(f"config.edit.mask: {err} Or a .png path (nonzero = known).") from None
    name = spec
  return mask, re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


@dataclasses.dataclass
class _EditJob:
  config: object
  workdir: str
  params: object
  step: int
  images: np.ndarray  # uint8 [N, H, W, C]

  @classmethod
  def _restore(cls, config, workdir: str):
    """Images and the restored checkpoint; call after validate_edit_config."""
    images = load_images(config)
    restored = sample_job.SampleJob.setup(config, workdir)
    return restored, images

  def _labels(self) -> np.ndarray | None:
    """Labels for a class-conditional model: config.sampling.class_label for every image
    (guided with config.sampling.guidance_weight), or None (-1, or an unconditional model):
    the null label, i.e. the unconditional model."""
    k, label = self.config.model.num_classes, self.config.sampling.class_label
    if k == 0 or label < 0:
      return None
    return np.full((len(self.images),), label, np.int32)

  def _denoiser(self, model, params, labels):
    """The model as f(x_t, t), guided towards `labels` if given (see `_labels`)."""
    if labels is None:
      return sampling.make_denoise_fn(model, params)
    return sampling.make_denoise_fn(model, params, labels, self.config.sampling.guidance_weight)

  def _run_batched(self, fn, x: np.ndarray) -> np.ndarray:
    """fn(params, x [b, ...], keys [b], labels [b] or None) over `x` in batches of
    config.sampling.batch_size (the last one padded to the compiled size); image i uses key
    fold_in(edit.seed, i) and its label alone, so results do not depend on the batch size."""
    n, batch = len(x), min(self.config.sampling.batch_size, len(x))
    key = jax.random.PRNGKey(self.config.edit.seed)
    keys = np.asarray(jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n)))
    labels = self._labels()
    outs = []
    for i, xb, m in features_lib.padded_batches(x, batch):
      kb = features_lib.pad_rows(keys[i:i + batch], batch)
      yb = None if labels is None else features_lib.pad_rows(labels[i:i + batch], batch)
      outs.append(np.asarray(fn(self.params, xb, kb, yb))[:m])
    return np.concatenate(outs)

  def _out_dir(self) -> str:
    out = os.path.join(self.workdir, "edit")
    os.makedirs(out, exist_ok=True)
    return out


@dataclasses.dataclass
class InpaintJob(_EditJob):
  mask: np.ndarray = None  # float32 [H, W, 1], 1 = known.
  mask_name: str = ""

  @classmethod
  def setup(cls, config, workdir: str) -> "InpaintJob":
    """Checks config.edit, reads the images and the mask, restores the checkpoint."""
    validate_edit_config(config)
    mask, name = load_mask(config)
    job, images = cls._restore(config, workdir)
    return cls(config, job.workdir, job.params, job.step, images, mask, name)

  def run(self) -> dict:
    c, e = self.config, self.config.edit
    schedule = schedules.schedule_from_config(c.diffusion)
    model = train.create_model(c)
    kwargs = dict(num_steps=e.num_steps, jump_length=e.jump_length, jump_n_sample=e.jump_n_sample,
                  spacing=c.sampling.spacing, variance=c.sampling.variance,
                  prediction_type=c.diffusion.prediction_type, clip_x0=c.sampling.clip_x0)
    mask = jnp.asarray(self.mask)
    fn = jax.jit(lambda p, x, k, y: inpainting.repaint(
        self._denoiser(model, p, y), schedule, x, mask, k, **kwargs).samples)
    calls = inpainting.num_network_calls(e.num_steps, e.jump_length, e.jump_n_sample)
    logging.info("Inpainting %d images (mask %s, %.1f%% known) with RePaint: %d steps, j=%d, "
                 "r=%d, %d network calls per image, checkpoint step %d.", len(self.images),
                 self.mask_name, 100 * self.mask.mean(), e.num_steps, e.jump_length,
                 e.jump_n_sample, calls, self.step)
    n = len(self.images)
    t0 = time.time()
    inpainted = image_grid.to_uint8(self._run_batched(
        fn, np.asarray(likelihood.uint8_to_model_range(self.images))))
    seconds = time.time() - t0
    known = np.broadcast_to(self.mask > 0.5, self.images.shape)
    err = (inpainted.astype(np.float64) - self.images) / 255.0
    mse_known = float(np.mean(err[known] ** 2)) if known.any() else float("nan")
    mse_hole = float(np.mean(err[~known] ** 2)) if (~known).any() else float("nan")
    masked = np.where(known, self.images, np.uint8(128))
    name = f"inpaint_{self.mask_name}_step{self.step}"
    out_dir = self._out_dir()
    png = image_grid.save_grid(os.path.join(out_dir, name + ".png"),
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


@dataclasses.dataclass
class ProcessJob(_EditJob):

  @classmethod
  def setup(cls, config, workdir: str) -> "ProcessJob":
    """Checks config.edit, reads the images, restores the checkpoint."""
    validate_edit_config(config)
    job, images = cls._restore(config, workdir)
    return cls(config, job.workdir, job.params, job.step, images)

  def run(self) -> dict:
    c, e = self.config, self.config.edit
    schedule = schedules.schedule_from_config(c.diffusion)
    model = train.create_model(c)
    out_dir, key = self._out_dir(), jax.random.PRNGKey(e.seed)
    n = len(self.images)
    x0 = likelihood.uint8_to_model_range(self.images)
    fwd = process_figures.forward_strip(schedule, x0, jax.random.fold_in(key, 0), e.num_frames)

    s, kwargs = c.sampling, sampling.sampler_kwargs(c.sampling, c.diffusion)
    traj_fn = jax.jit(lambda p, k, y: samplers.sample(
        s.method, self._denoiser(model, p, y), schedule, k, x0.shape,
        return_trajectory=True, **kwargs).trajectory)
    t0 = time.time()
    traj = np.asarray(traj_fn(self.params, jax.random.fold_in(key, 1), self._labels()))
    seconds = time.time() - t0
    steps = process_figures.trajectory_steps(schedule.num_timesteps, len(traj), s.spacing)
    idx = process_figures.frame_indices(len(traj), e.num_frames)
    rev = process_figures.Frames(traj[idx], steps[idx])

    ncols = int(np.ceil(np.sqrt(n)))
    out = {}
    for kind, frames, name, title in (
        ("forward", fwd, f"forward_step{self.step}",
         f"forward process q(x_t | x_0), T={schedule.num_timesteps}"),
        ("reverse", rev, f"reverse_{sampling.sampler_name(s)}_step{self.step}",
         f"reverse process, {sampling.sampler_name(s)}, checkpoint step {self.step}")):
      path = os.path.join(out_dir, name)
      out[f"{kind}_png"] = process_figures.save_strip(path + ".png", frames.frames, frames.steps,
                                                      title=title)
      out[f"{kind}_gif"] = process_figures.save_gif(path + ".gif", frames.frames,
                                                    _durations(e.num_frames), ncols=ncols)
    logging.info("Process figures of %d images (%d frames; sampling took %.1f s including "
                 "compilation): %s", n, e.num_frames, seconds, ", ".join(out.values()))
    return out | {"forward": fwd, "reverse": rev}


@dataclasses.dataclass
class DenoiseJob(_EditJob):
  """Denoising and SDEdit (`--mode=denoise`), see config.edit in configs/default.py."""

  @classmethod
  def setup(cls, config, workdir: str) -> "DenoiseJob":
    """Checks config.edit, reads the images, restores the checkpoint."""
    validate_edit_config(config)
    _noise_checks(config)
    job, images = cls._restore(config, workdir)
    return cls(config, job.workdir, job.params, job.step, images)

  def start_step(self, schedule) -> tuple[int, float]:
    """(t0, the input's noise std in the model's [-1, 1] range)."""
    e = self.config.edit
    sigma = 2.0 * float(e.noise_sigma)
    if e.strength == 0:
      return denoising.timestep_for_sigma(schedule, sigma), sigma
    t0 = max(int(round(e.strength * schedule.num_timesteps)) - 1, 0)
    if sigma > 0 and t0 < denoising.timestep_for_sigma(schedule, sigma):
      raise ValueError(f"config.edit.strength={e.strength:g} starts at t0={t0}, below the "
                       f"input's noise level noise_sigma={e.noise_sigma:g} (t="
                       f"{denoising.timestep_for_sigma(schedule, sigma)}); allowed: 0 (match "
                       f"it) or at least {(denoising.timestep_for_sigma(schedule, sigma) + 1) / schedule.num_timesteps:.3f}.")
    return t0, sigma

  def run(self) -> dict:
    c, e, s = self.config, self.config.edit, self.config.sampling
    schedule = schedules.schedule_from_config(c.diffusion)
    model = train.create_model(c)
    t0, sigma = self.start_step(schedule)
    steps = min(s.num_steps, t0 + 1)
    clean = likelihood.uint8_to_model_range(self.images)
    noisy = np.asarray(clean)
    if e.add_noise and sigma > 0:
      noise_key = jax.random.fold_in(jax.random.PRNGKey(e.seed), 1 << 20)
      noisy = noisy + sigma * np.asarray(jax.random.normal(noise_key, noisy.shape))

    def fn(p, y, k, labels):
      k_start, k_rev = jax.vmap(lambda kk: jax.random.split(kk))(k).swapaxes(0, 1)
      x_t = jax.vmap(lambda yi, ki: denoising.perturb_to_xt(schedule, yi[None], t0, sigma,
                                                            ki)[0])(y, k_start)
      return denoising.denoise_reverse(
          self._denoiser(model, p, labels), schedule, y, t0, k_rev, method=s.method,
          num_steps=steps, eta=s.eta, variance=s.variance,
          prediction_type=c.diffusion.prediction_type, clip_x0=s.clip_x0, x_t=x_t)

    what = "denoising" if e.strength == 0 else "SDEdit"
    logging.info("%s %d images (noise std %g on [0, 1]%s) from t0=%d with %s, %d steps, "
                 "checkpoint step %d.", what, len(noisy), e.noise_sigma,
                 ", added here" if e.add_noise else ", in the inputs", t0, s.method, steps,
                 self.step)
    t_start = time.time()
    denoised = image_grid.to_uint8(self._run_batched(jax.jit(fn), noisy.astype(np.float32)))
    seconds = time.time() - t_start
    noisy_u8 = image_grid.to_uint8(noisy)
    result = dict(t0=t0, num_steps=steps, method=s.method, noise_sigma=float(e.noise_sigma),
                  strength=float(e.strength), seconds=seconds)
    rows = [noisy_u8, denoised]  # SDEdit: the input (noisy or not) and its edit.
    labels = ["noisy", "denoised"] if e.strength == 0 else ["input", "edited"]
    if e.add_noise:  # The clean originals are known: score against them.
      rows, labels = [self.images] + rows, ["original"] + labels
      ref = self.images.astype(np.float64) / 255.0
      for name, img in (("noisy", noisy / 2.0 + 0.5), ("denoised", denoised / 255.0)):
        result[f"mse_{name}"] = float(metrics.mse(img, ref).mean())
        result[f"psnr_{name}"] = float(metrics.psnr(img, ref, 1.0).mean())
      logging.info("PSNR against the originals: noisy %.2f dB, denoised %.2f dB.",
                   result["psnr_noisy"], result["psnr_denoised"])
    kind = "denoise" if e.strength == 0 else f"sdedit{e.strength:g}"
    ran = s.copy_and_resolve_references()  # The steps that ran: trailing over {0..t0}.
    ran.num_steps, ran.spacing = steps, "uniform"
    name = f"{kind}_sigma{e.noise_sigma:g}_{sampling.sampler_name(ran)}_step{self.step}"
    out_dir = self._out_dir()
    if e.add_noise:
      labels[1:] = [f"noisy\n{result['psnr_noisy']:.1f} dB",
                    f"denoised\n{result['psnr_denoised']:.1f} dB"]
    png = image_grid.save_labeled_rows(os.path.join(out_dir, name + ".png"), rows, labels,
                                       title=f"{what} from t0={t0} ({s.method}, {steps} steps)",
                                       max_images=len(self.images))
    npz = os.path.join(out_dir, name + ".npz")
    np.savez_compressed(npz, original=self.images, noisy=noisy_u8, denoised=denoised,
                        checkpoint_step=self.step, **result)
    logging.info("Wrote %s and %s (%.1f s including compilation).", png, npz, seconds)
    return result | {"png": png, "npz": npz, "denoised": denoised, "noisy": noisy_u8}


def _durations(num_frames: int) -> list[int]:
  """200 ms a frame, the last one held for 1.5 s."""
  return [200] * (num_frames - 1) + [1500]
