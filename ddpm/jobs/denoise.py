"""`--mode=denoise`: denoising, and SDEdit (Meng et al. 2022).

Restores the checkpoint as `--mode=sample` does and denoises the images of config.edit.input,
which carry Gaussian noise of std config.edit.noise_sigma (added here with edit.add_noise, or
already in them), from the step of matching noise level; or, with config.edit.strength > 0,
runs SDEdit from t0 = strength * T. config.sampling's sampler runs the reverse process. Writes
edit/<denoise|sdedit...>_sigma<s>_<sampler>_step<step>.png (rows: original, noisy, denoised,
with PSNR when the originals are known) and .npz.
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np
from absl import logging

from ddpm.data import image_arrays
from ddpm.diffusion import denoising, schedules
from ddpm.evaluation import metrics
from ddpm.jobs import config_validation, editing
from ddpm.models import build
from ddpm.pipelines import generation
from ddpm.visualization import figures


@dataclasses.dataclass
class DenoiseJob(editing.EditJob):
  """Denoising and SDEdit (`--mode=denoise`), see config.edit in configs/default.py."""

  @staticmethod
  def validate(config) -> None:
    """The config-only checks of `setup` (t0 included): one-line ValueError for the first bad
    value."""
    config_validation.validate_config(config)
    editing.validate_edit_config(config)
    _noise_checks(config)
    start_step(config, schedules.schedule_from_config(config.diffusion))

  @classmethod
  def setup(cls, config, workdir: str) -> "DenoiseJob":
    """Checks config.edit, reads the images, restores the checkpoint."""
    cls.validate(config)
    return cls(config, *editing.EditJob.load(config, workdir))

  def start_step(self, schedule) -> tuple[int, float]:
    """(t0, the input's noise std in the model's [-1, 1] range): `start_step` of the config."""
    return start_step(self.config, schedule)

  def run(self) -> dict:
    c, e, s = self.config, self.config.edit, self.config.sampling
    schedule = schedules.schedule_from_config(c.diffusion)
    model = build.create_model(c)
    t0, sigma = self.start_step(schedule)
    steps = min(s.num_steps, t0 + 1)
    clean = image_arrays.uint8_to_model_range(self.images)
    noisy = np.asarray(clean)
    if e.add_noise and sigma > 0:
      noise_key = jax.random.fold_in(jax.random.PRNGKey(e.seed), 1 << 20)
      noisy = noisy + sigma * np.asarray(jax.random.normal(noise_key, noisy.shape))

    def fn(p, y, k, labels):
      k_start, k_rev = jax.vmap(lambda kk: jax.random.split(kk))(k).swapaxes(0, 1)
      x_t = jax.vmap(lambda yi, ki: denoising.perturb_to_xt(schedule, yi[None], t0, sigma,
                                                            ki)[0])(y, k_start)
      return denoising.denoise_reverse(
          self.denoise_fn(model, p, labels), schedule, y, t0, k_rev, method=s.method,
          num_steps=steps, eta=s.eta, variance=s.variance,
          prediction_type=c.diffusion.prediction_type, clip_x0=s.clip_x0, x_t=x_t)

    what = "denoising" if e.strength == 0 else "SDEdit"
    logging.info("%s %d images (noise std %g on [0, 1]%s) from t0=%d with %s, %d steps, "
                 "checkpoint step %d.", what, len(noisy), e.noise_sigma,
                 ", added here" if e.add_noise else ", in the inputs", t0, s.method, steps,
                 self.step)
    t_start = time.time()
    denoised = image_arrays.to_uint8(self.run_batched(jax.jit(fn), noisy.astype(np.float32)))
    seconds = time.time() - t_start
    noisy_u8 = image_arrays.to_uint8(noisy)
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
    name = f"{kind}_sigma{e.noise_sigma:g}_{generation.sampler_name(ran)}_step{self.step}"
    out_dir = self.out_dir()
    if e.add_noise:
      labels[1:] = [f"noisy\n{result['psnr_noisy']:.1f} dB",
                    f"denoised\n{result['psnr_denoised']:.1f} dB"]
    png = figures.save_labeled_rows(os.path.join(out_dir, name + ".png"), rows, labels,
                                    title=f"{what} from t0={t0} ({s.method}, {steps} steps)",
                                    max_images=len(self.images))
    npz = os.path.join(out_dir, name + ".npz")
    np.savez_compressed(npz, original=self.images, noisy=noisy_u8, denoised=denoised,
                        checkpoint_step=self.step, **result)
    logging.info("Wrote %s and %s (%.1f s including compilation).", png, npz, seconds)
    return result | {"png": png, "npz": npz, "denoised": denoised, "noisy": noisy_u8}


def start_step(config, schedule) -> tuple[int, float]:
  """(t0, the input's noise std in the model's [-1, 1] range) of config.edit: the step whose
  noise level matches noise_sigma (strength 0), else SDEdit's t0 = strength * T; one-line
  ValueError when t0 lies below the input's noise level."""
  e = config.edit
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
