r"""`--mode=eval`: how good a checkpoint is, as numbers a command reproduces.

For the checkpoint chosen by config.sampling.checkpoint_step (-1: the latest) this measures

  * samples: FID, Inception Score and k-NN precision/recall of config.eval.num_samples images
    drawn with config.sampling (or read from config.eval.samples_npz), against the statistics
    of the reference split (cached in workdir/eval/reference/), and the same numbers for real
    images of config.eval.real_split: the floor the model is measured against;
  * bpd: the variational bound in bits/dim on the test split (ddpm/likelihood.py);
  * denoise: MSE/PSNR of test images with added Gaussian noise, denoised in one step and by
    the reverse process (ddpm/denoising.py), next to the noisy baseline, and a figure.

Results are merged into workdir/eval/<step>.json (one entry per sampler under "samples", so
several samplers of one checkpoint collect in one file); figures go to workdir/eval/.
Every piece is a function usable from Python as well.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ddpm import (config_validation, denoising, features as features_lib, image_grid,
                  input_pipeline, likelihood, metrics, sample_job, sampling, schedules, train)


# ---------------------------------------------------------------- sample quality

def reference_statistics(config, extractor: features_lib.FeatureExtractor, split: str,
                         cache_dir: str | None, num: int = 0, pr_num: int = 10_000) -> dict:
  """FID statistics (mu, sigma) of `split` and features of a seeded subset for precision/recall.

  Cached as <cache_dir>/<dataset>_<split>_<size><resize>_<extractor>_<num>.npz.
  """
  d = config.data
  name = f"{d.dataset}_{split}_{d.image_size}{d.resize_method}_{extractor.name}_{num or 'all'}.npz"
  path = os.path.join(cache_dir, name) if cache_dir else None
  if path and os.path.isfile(path):
    with np.load(path) as f:
      return {k: f[k] for k in f.files} | {"path": path, "cached": True}
  t0 = time.time()
  images, _ = input_pipeline.load_split_uint8(config, split, num or None)
  feats = extractor(images)
  stats = metrics.gaussian_stats(feats.features)
  pick = np.random.default_rng(0).permutation(len(images))[:pr_num]
  out = dict(mu=stats.mu, sigma=stats.sigma, num=np.int64(stats.num),
             pr_features=feats.features[pick].astype(np.float32))
  logging.info("Reference statistics of %s/%s: %d images through %s in %.1f s.", d.dataset, split,
               len(images), extractor.name, time.time() - t0)
  if path:
    os.makedirs(cache_dir, exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **out)
    os.replace(tmp, path)
  return out | {"path": path, "cached": False}


def sample_quality(extractor: features_lib.FeatureExtractor, images, reference: dict, *,
                   k: int = 3, is_splits: int = 10, pr_features=None) -> dict:
  """FID, IS (mean, std) and precision/recall of uint8 `images` against `reference`.

  Precision/recall compare equally many real and generated images (the first n of the
  reference subset), since both depend on the set sizes.
  """
  feats = extractor(images)
  fid = metrics.frechet_distance(
      metrics.gaussian_stats(feats.features),
      metrics.GaussianStats(reference["mu"], reference["sigma"], int(reference["num"])))
  is_mean, is_std = metrics.inception_score(feats.probs, is_splits)
  real_pr = np.asarray(reference["pr_features"] if pr_features is None else pr_features, np.float64)
  n = min(len(real_pr), len(feats.features))
  precision, recall = metrics.precision_recall(real_pr[:n], feats.features[:n], k)
  return dict(num_images=int(len(feats.features)), fid=fid, inception_score=is_mean,
              inception_score_std=is_std, precision=precision, recall=recall, pr_k=k, pr_num=n,
              extractor=extractor.name)


# ---------------------------------------------------------------- likelihood

def bits_per_dim(model, params, schedule, images_uint8, key, *, num_strata: int,
                 prediction_type: str, variance: str, batch_size: int = 250) -> dict:
  """Mean bound in bits/dim over images, its standard error, and the prior term."""
  fn = jax.jit(lambda p, x, k: likelihood.bpd_estimate(
      sampling.make_denoise_fn(model, p), schedule, x, k, num_strata=num_strata,
      prediction_type=prediction_type, variance=variance))
  x_all = features_lib.check_images(images_uint8)
  totals, priors, t0 = [], [], time.time()
  for i, chunk, n in features_lib.padded_batches(x_all, batch_size):
    est = fn(params, likelihood.uint8_to_model_range(chunk), jax.random.fold_in(key, i))
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


# ---------------------------------------------------------------- denoising

def denoising_eval(model, params, schedule, images_uint8, key, *, sigmas, ddim_steps: int,
                   prediction_type: str, clip_x0: bool, batch_size: int = 250
                   ) -> tuple[dict, dict]:
  """MSE and PSNR (dB, [0, 1] scale) of noisy and denoised test images per noise level.

  `sigmas` are noise std on the [0, 1] pixel scale (2 sigma in the model's [-1, 1] range).
  Returns (metrics per sigma, images per sigma for the figure: noisy, one-step, ddpm, ddim).
  """
  x = likelihood.uint8_to_model_range(features_lib.check_images(images_uint8))
  denoise_fn = lambda p: sampling.make_denoise_fn(model, p)
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


def save_denoising_figure(path: str, clean_uint8, pictures: dict, results: dict,
                          num: int = 8) -> str:
  """Rows: original, then for each noise level noisy / one-step / DDPM / DDIM, with labels."""
  rows, labels = [clean_uint8], ["original"]
  for key, outs in pictures.items():
    r = results[key]
    rows.append(image_grid.to_uint8(np.clip(outs["noisy"], -1, 1)))
    labels.append(f"noisy sigma={key}\n{r['psnr_noisy']:.1f} dB")
    for name, label in (("one_step", "one-step x0"), ("ddpm", f"DDPM from t={r['timestep']}"),
                        ("ddim", "DDIM from t")):
      rows.append(image_grid.to_uint8(outs[name]))
      labels.append(f"{label}\n{r['psnr_' + name]:.1f} dB")
  return image_grid.save_labeled_rows(path, rows, labels, max_images=num)


# ---------------------------------------------------------------- the job

def load_samples_npz(path: str, image_shape) -> np.ndarray:
  if not os.path.isfile(path):
    raise ValueError(f"config.eval.samples_npz={path} does not exist.")
  with np.load(path) as f:
    if "images" not in f.files:
      raise ValueError(f"config.eval.samples_npz={path} has no 'images' array (has: "
                       f"{', '.join(f.files)}).")
    images = f["images"]
  return features_lib.check_images(images, tuple(image_shape), name=f"images in {path}")


def _merge_json(path: str, update: dict) -> dict:
  data = {}
  if os.path.isfile(path):
    with open(path) as f:
      data = json.load(f)
  for k, v in update.items():
    if isinstance(v, dict) and isinstance(data.get(k), dict):
      data[k] = data[k] | v
    else:
      data[k] = v
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(data, f, indent=1, sort_keys=True)
  os.replace(tmp, path)
  return data


@dataclasses.dataclass
class EvalJob:
  config: object
  workdir: str
  params: object
  step: int
  metrics: tuple[str, ...]
  extractor: features_lib.FeatureExtractor | None

  @classmethod
  def setup(cls, config, workdir: str) -> "EvalJob":
    """Checks inputs, restores the checkpoint, loads the feature network: one-line errors."""
    config_validation.validate_config(config)
    ev = config.eval
    wanted = tuple(m.strip() for m in ev.metrics.split(",") if m.strip())
    extractor = features_lib.extractor_for(config) if "samples" in wanted else None
    if "samples" in wanted and ev.samples_npz:
      load_samples_npz(ev.samples_npz, train.image_shape(config))  # Fail before any work.
    return cls(config, *sample_job.restore_params(config, workdir), wanted, extractor)

  def run(self) -> dict:
    c, ev = self.config, self.config.eval
    out_dir = os.path.join(self.workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, f"{self.step}.json")
    is_main = jax.process_index() == 0
    model = train.create_model(c)
    schedule = schedules.schedule_from_config(c.diffusion)
    key = jax.random.PRNGKey(ev.seed)
    result = {"step": self.step, "dataset": c.data.dataset, "use_ema": bool(c.sampling.use_ema)}

    if "samples" in self.metrics:
      ref = reference_statistics(c, self.extractor, ev.reference_split,
                                 os.path.join(out_dir, "reference"), ev.num_reference)
      real, _ = input_pipeline.load_split_uint8(c, ev.real_split, ev.num_samples)
      floor = sample_quality(self.extractor, real, ref, k=ev.pr_k, is_splits=ev.is_splits)
      floor["split"] = ev.real_split
      logging.info("Real %s images vs %s: FID %.3f, IS %.3f, precision %.3f, recall %.3f",
                   ev.real_split, ev.reference_split, floor["fid"], floor["inception_score"],
                   floor["precision"], floor["recall"])
      if ev.samples_npz:
        images = load_samples_npz(ev.samples_npz, train.image_shape(c))
        name, info = os.path.splitext(os.path.basename(ev.samples_npz))[0], {"npz": ev.samples_npz}
      else:
        images, info = self._draw(ev.num_samples)
        name = f"{sampling.sampler_name(c.sampling)}_seed{c.sampling.seed}"
        image_grid.save_grid(os.path.join(out_dir, f"{self.step}_{name}.png"), images[:64])
      q = sample_quality(self.extractor, images, ref, k=ev.pr_k, is_splits=ev.is_splits) | info
      logging.info("Samples %s: FID %.3f, IS %.3f, precision %.3f, recall %.3f", name, q["fid"],
                   q["inception_score"], q["precision"], q["recall"])
      result |= {"reference": {"split": ev.reference_split, "num_images": int(ref["num"])},
                 "real_floor": floor, "samples": {name: q}}

    if "bpd" in self.metrics or "denoise" in self.metrics:  # One read serves both.
      test_all, _ = input_pipeline.load_split_uint8(
          c, c.data.eval_split, max(ev.bpd_num_images, ev.denoise_num_images))

    if "bpd" in self.metrics:
      test = test_all[:ev.bpd_num_images]
      result["bpd"] = bits_per_dim(model, self.params, schedule, test, jax.random.fold_in(key, 1),
                                   num_strata=ev.bpd_num_strata,
                                   prediction_type=c.diffusion.prediction_type,
                                   variance=ev.bpd_variance, batch_size=ev.batch_size)
      result["bpd"]["split"] = c.data.eval_split
      logging.info("Bound on %d %s images: %.4f +- %.4f bits/dim (prior term %.2e)",
                   result["bpd"]["num_images"], c.data.eval_split, result["bpd"]["bits_per_dim"],
                   result["bpd"]["standard_error"] or 0.0, result["bpd"]["prior_bits_per_dim"])

    if "denoise" in self.metrics:
      test = test_all[:ev.denoise_num_images]
      res, pics = denoising_eval(model, self.params, schedule, test, jax.random.fold_in(key, 2),
                                 sigmas=tuple(ev.denoise_sigmas), ddim_steps=ev.denoise_ddim_steps,
                                 prediction_type=c.diffusion.prediction_type,
                                 clip_x0=c.sampling.clip_x0, batch_size=ev.batch_size)
      result["denoise"] = res
      if is_main:
        fig = save_denoising_figure(os.path.join(out_dir, f"{self.step}_denoise.png"), test, pics, res)
        npz = os.path.join(out_dir, f"{self.step}_denoise.npz")
        np.savez_compressed(npz, clean=test, sigmas=np.asarray(ev.denoise_sigmas), **{
            f"{name}_sigma{key}": image_grid.to_uint8(np.clip(img, -1, 1))
            for key, outs in pics.items() for name, img in outs.items()})
        logging.info("Wrote %s and %s", fig, npz)

    if is_main:
      result = _merge_json(json_path, result)
      logging.info("Wrote %s", json_path)
    return result

  def _draw(self, num: int) -> tuple[np.ndarray, dict]:
    s = self.config.sampling
    logging.info("Sampling %d images with %s (%d steps) from step %d.", num, s.method,
                 s.num_steps, self.step)
    images, seconds = sampling.draw(self.config, self.params, num)
    return images, dict(method=s.method, num_steps=s.num_steps, eta=s.eta, seed=s.seed,
                        sampling_seconds=seconds, images_per_second=num / seconds)
