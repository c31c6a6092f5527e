"""`--mode=anomaly`: anomaly scores of normal and anomalous images, and their AUROC.

Scores normal images (config.data.dataset, config.anomaly.normal_split) and anomalous ones
(config.anomaly.anomalous: a TFDS name, an .npz or a folder of images, anomalous_split) with the model's
denoising error over several time steps and its bits/dim bound
(`ddpm.evaluation.anomaly_scores`), and writes anomaly/<step>_<name>.json (AUROC per score and
per time step, `ddpm.evaluation.metrics.auroc`), .npz (every image's scores) and .png
(histograms and ROC curves).
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

from ddpm.data import batching, image_arrays, image_files, image_folder, input_pipeline
from ddpm.diffusion import likelihood, schedules
from ddpm.evaluation import anomaly_scores, metrics
from ddpm.jobs import config_validation, restore
from ddpm.models import build
from ddpm.pipelines import denoiser
from ddpm.visualization import figures


def _load(config, spec: str, split: str, num: int, shape) -> np.ndarray:
  """uint8 images from a TFDS dataset name (preprocessed like the training data), an .npz or a
  folder of images (read as an image folder dataset)."""
  if spec.endswith(".npz"):
    return image_files.read_npz_images(spec, shape, num, "config.anomaly.anomalous")
  if os.path.isdir(spec):
    return image_folder.read_folder_uint8(spec, shape, num, config.data.resize_method,
                                          "config.anomaly.anomalous")
  c = config.copy_and_resolve_references()
  with c.unlocked():
    if c.data.dataset == input_pipeline.IMAGE_FOLDER and spec != c.data.dataset:
      c.data.data_dir = ""  # The folder is not a TFDS data dir: $TFDS_DATA_DIR or the default.
    c.data.dataset = spec
  images, _ = input_pipeline.load_split_uint8(c, split, num)
  return images


def validate_anomaly_config(config) -> None:
  a = config.anomaly
  names = [s.strip() for s in a.scores.split(",") if s.strip()]
  if not names or any(n not in anomaly_scores.SCORES for n in names):
    raise ValueError(f"config.anomaly.scores={a.scores!r}; allowed: a comma-separated list of "
                     f"{', '.join(anomaly_scores.SCORES)}.")
  for key in ("num_images", "num_draws", "batch_size", "bpd_num_strata"):
    v = a[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ValueError(f"config.anomaly.{key}={v!r} must be a positive integer.")
  ts = tuple(a.timesteps)
  T = config.diffusion.num_timesteps
  if not ts or any(not isinstance(t, int) or not 0 <= t < T for t in ts):
    raise ValueError(f"config.anomaly.timesteps={ts} must be time steps in 0..{T - 1}.")
  if a.bpd_num_strata > T:
    raise ValueError(f"config.anomaly.bpd_num_strata={a.bpd_num_strata} must be <= {T}.")
  if not a.anomalous:
    raise ValueError("config.anomaly.anomalous is empty; allowed: a TFDS dataset name (e.g. "
                     "fashion_mnist) or an .npz with `images`.")


@dataclasses.dataclass
class AnomalyJob:
  """Scores normal (config.data.dataset, anomaly.normal_split) and anomalous images
  (anomaly.anomalous: a TFDS name or .npz, anomaly.anomalous_split) with the model and
  writes anomaly/<step>.json (AUROC per score and per time step), .npz and .png."""
  config: object
  workdir: str
  params: object
  step: int
  normal: np.ndarray
  anomalous: np.ndarray

  @staticmethod
  def validate(config) -> None:
    """The config-only checks of `setup`: one-line ValueError for the first bad value."""
    config_validation.validate_config(config)
    validate_anomaly_config(config)

  @classmethod
  def setup(cls, config, workdir: str) -> "AnomalyJob":
    cls.validate(config)
    a, shape = config.anomaly, build.image_shape(config)
    normal = _load(config, config.data.dataset, a.normal_split, a.num_images, shape)
    anomalous = _load(config, a.anomalous, a.anomalous_split, a.num_images, shape)
    return cls(config, *restore.restore_params(config, workdir), normal, anomalous)

  def run(self) -> dict:
    c, a = self.config, self.config.anomaly
    schedule = schedules.schedule_from_config(c.diffusion)
    model = build.create_model(c)
    names = [s.strip() for s in a.scores.split(",") if s.strip()]
    pt = c.diffusion.prediction_type
    den = jax.jit(lambda p, x, k: anomaly_scores.denoising_errors(
        denoiser.make_denoise_fn(model, p), schedule, x, k, tuple(a.timesteps),
        num_draws=a.num_draws, prediction_type=pt))
    bpd = jax.jit(lambda p, x, k: likelihood.bpd_estimate(
        denoiser.make_denoise_fn(model, p), schedule, x, k, num_strata=a.bpd_num_strata,
        prediction_type=pt, variance=c.eval.bpd_variance).total)
    results = {"checkpoint_step": self.step, "normal": f"{c.data.dataset}:{a.normal_split}",
               "anomalous": f"{a.anomalous}:{a.anomalous_split}",
               "num_normal": len(self.normal), "num_anomalous": len(self.anomalous),
               "timesteps": list(a.timesteps), "num_draws": a.num_draws}
    per_image, scores = {}, {}
    for name in names:
      t0 = time.time()
      outs = []
      for which, images in (("normal", self.normal), ("anomalous", self.anomalous)):
        key = jax.random.fold_in(jax.random.PRNGKey(a.seed), 0 if which == "normal" else 1)
        vals = []
        for i, chunk, n in batching.padded_batches(images, a.batch_size):
          x = image_arrays.uint8_to_model_range(chunk)
          if name == "denoise":
            keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(i + jnp.arange(len(chunk)))
            vals.append(np.asarray(den(self.params, x, keys), np.float64)[:n])
          else:
            vals.append(np.asarray(bpd(self.params, x, jax.random.fold_in(key, i)), np.float64)[:n])
        v = np.concatenate(vals)
        per_image[f"{name}_{which}"] = v
        outs.append(v.mean(axis=1) if v.ndim == 2 else v)
      scores[name] = tuple(outs)
      results[name] = {"auroc": metrics.auroc(*outs), "seconds": time.time() - t0,
                       "mean_normal": float(outs[0].mean()), "mean_anomalous": float(outs[1].mean())}
      if name == "denoise":
        results[name]["auroc_per_timestep"] = {
            int(t): metrics.auroc(per_image["denoise_normal"][:, k], per_image["denoise_anomalous"][:, k])
            for k, t in enumerate(a.timesteps)}
      logging.info("%s score: AUROC %.4f (%.0f s).", name, results[name]["auroc"],
                   results[name]["seconds"])
    out_dir = os.path.join(self.workdir, "anomaly")
    os.makedirs(out_dir, exist_ok=True)
    tag = f"{self.step}_{os.path.splitext(os.path.basename(a.anomalous))[0]}"
    aurocs = {n: results[n]["auroc"] for n in names}
    rocs = {n: metrics.roc_curve(*scores[n]) for n in names}
    png = figures.save_anomaly_figure(os.path.join(out_dir, tag + ".png"), scores, aurocs, rocs,
                                      c.data.dataset, os.path.basename(a.anomalous))
    npz = os.path.join(out_dir, tag + ".npz")
    np.savez_compressed(npz, **per_image)
    path = os.path.join(out_dir, tag + ".json")
    with open(path, "w") as f:
      json.dump(results, f, indent=1)
    logging.info("Wrote %s, %s and %s.", path, png, npz)
    return results | {"json": path, "png": png, "npz": npz, "scores": scores}
