r"""How good a model's denoiser is on real test images: the variational bound in bits/dim and
denoising PSNR.

  * `bits_per_dim`: the bound L of Ho et al. 2020 (eq. 5, 13) per image, stratified over time
    steps (`ddpm.diffusion.likelihood.bpd_estimate`), with its standard error;
  * `denoising_eval`: test images with Gaussian noise of std sigma (on the [0, 1] scale),
    denoised in one step (x0 prediction at the matching t), by DDPM from t and by DDIM from t
    (`ddpm.diffusion.denoising`); MSE and PSNR next to the noisy input's.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ddpm.data import batching, image_arrays
from ddpm.diffusion import denoising, likelihood
from ddpm.evaluation import metrics
from ddpm.pipelines import denoiser


def bits_per_dim(model, params, schedule, images_uint8, key, *, num_strata: int,
                 prediction_type: str, variance: str, batch_size: int = 250) -> dict:
  """Mean bound in bits/dim over images, its standard error, and the prior term."""
  fn = jax.jit(lambda p, x, k: likelihood.bpd_estimate(
      denoiser.make_denoise_fn(model, p), schedule, x, k, num_strata=num_strata,
      prediction_type=prediction_type, variance=variance))
  x_all = image_arrays.check_images(images_uint8)
  totals, priors, t0 = [], [], time.time()
  for i, chunk, n in batching.padded_batches(x_all, batch_size):
    est = fn(params, image_arrays.uint8_to_model_range(chunk), jax.random.fold_in(key, i))
    totals.append(np.asarray(est.total, np.float64)[:n])
    priors.append(np.asarray(est.prior, np.float64)[:n])
    done = i + n
    logging.info("bits/dim: %d/%d images, %.1f images/s, ETA %.0f s", done, len(x_all),
                 done / (time.time() - t0), (len(x_all) - done) * (time.time() - t0) / done)
  total = np.concatenate(totals)
  if not np.all(np.isfinite(total)):
    raise FloatingPointError(f"the bound is not finite for {int(np.sum(~np.isfinite(total)))} images.")
  return dict(bits_per_dim=float(total.mean()),
              standard_error=float(total.std(ddof=1) / np.sqrt(len(total))) if len(total) > 1 else None,
              prior_bits_per_dim=float(np.concatenate(priors).mean()), num_images=int(len(total)),
              num_strata=num_strata, variance=variance, seconds=time.time() - t0)


def denoising_eval(model, params, schedule, images_uint8, key, *, sigmas, ddim_steps: int,
                   prediction_type: str, clip_x0: bool, batch_size: int = 250
                   ) -> tuple[dict, dict]:
  """MSE and PSNR (dB, [0, 1] scale) of noisy and denoised test images per noise level.

  `sigmas` are noise std on the [0, 1] pixel scale (2 sigma in the model's [-1, 1] range).
  Returns (metrics per sigma, images per sigma for the figure: noisy, one-step, ddpm, ddim).
  """
  x = image_arrays.uint8_to_model_range(image_arrays.check_images(images_uint8))
  denoise_fn = lambda p: denoiser.make_denoise_fn(model, p)
  one_step = jax.jit(lambda p, y, t: denoising.denoise_one_step(
      denoise_fn(p), schedule, y, t, prediction_type=prediction_type, clip_x0=clip_x0),
      static_argnums=2)
  reverse = jax.jit(lambda p, y, t, k, method, steps: denoising.denoise_reverse(
      denoise_fn(p), schedule, y, t, k, method=method, num_steps=steps,
      prediction_type=prediction_type, clip_x0=clip_x0), static_argnums=(2, 4, 5))
  results, pictures = {}, {}
  for j, sigma in enumerate(sigmas):
    t0 = time.time()
    sigma_model = 2.0 * float(sigma)
    t = denoising.timestep_for_sigma(schedule, sigma_model)
    k_noise, k_rev = jax.random.split(jax.random.fold_in(key, j))
    y = x + sigma_model * jax.random.normal(k_noise, x.shape)
    outs = {"noisy": [], "one_step": [], "ddpm": [], "ddim": []}
    for i in range(0, len(x), batch_size):
      yb = y[i:i + batch_size]
      kb = jax.random.fold_in(k_rev, i)
      outs["noisy"].append(yb)
      outs["one_step"].append(one_step(params, yb, t))
      outs["ddpm"].append(reverse(params, yb, t, kb, "ddpm", None))
      outs["ddim"].append(reverse(params, yb, t, kb, "ddim", min(ddim_steps, t + 1)))
    outs = {k: np.asarray(jnp.concatenate(v)) for k, v in outs.items()}
    entry = dict(sigma=float(sigma), timestep=t,
                 sigma_t=float(denoising.noise_to_signal(schedule)[t]) / 2.0)
    for name, img in outs.items():
      # Noisy images are scored as they are (unclipped); denoised ones are in [-1, 1] already.
      entry[f"mse_{name}"] = float(metrics.mse(img / 2.0, np.asarray(x) / 2.0).mean())
      entry[f"psnr_{name}"] = float(metrics.psnr(img, np.asarray(x), 2.0).mean())
    entry["seconds"] = time.time() - t0
    results[f"{sigma:g}"] = entry
    pictures[f"{sigma:g}"] = outs
    logging.info("denoise sigma %g (t=%d): PSNR noisy %.2f dB, one-step %.2f, DDPM %.2f, "
                 "DDIM-%d %.2f (%.0f s)", sigma, t, entry["psnr_noisy"], entry["psnr_one_step"],
                 entry["psnr_ddpm"], min(ddim_steps, t + 1), entry["psnr_ddim"], entry["seconds"])
  return results, pictures
