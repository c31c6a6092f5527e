r"""Anomaly scores from a diffusion model, and their AUROC (`--mode=anomaly`).

A model of the normal data denoises normal images well and others badly. The score of an
image x_0 is its denoising error averaged over a fixed set of time steps t_1..t_K and D draws
of the noise (the terms of L_simple, Ho et al. 2020, eq. 14, at those steps):

    e_k(x_0) = || eps_hat(x_{t_k}, t_k) - eps ||^2 / dim,   x_{t_k} = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps,
    score(x_0) = mean_k e_k(x_0),

higher meaning more anomalous; the noise of image i depends on its key alone. The
variational bound in bits/dim (`ddpm.likelihood`) is a second score (the negative
log-likelihood bound). Detection quality is the AUROC: the probability that a random anomalous
image scores higher than a random normal one, ties counting half (the Mann-Whitney U statistic
divided by n m).
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
from scipy import stats

from ddpm import diffusion, features as features_lib, input_pipeline, likelihood, sampling
from ddpm import sample_job, schedules, train
from ddpm.schedules import Schedule

SCORES = ("denoise", "bpd")


def denoising_errors(denoise_fn, schedule: Schedule, x0, key, timesteps, *,
                     num_draws: int = 1, prediction_type: str = "eps") -> jnp.ndarray:
  """e_k(x_0) of the module docstring, [B, K], each averaged over `num_draws` noise draws.

  `key` is one key per image ([B] typed or [B, 2] raw keys); draw d at step k uses
  fold_in(fold_in(key_i, k), d), so an image's errors do not depend on its batch.
  """
  ts = jnp.asarray(np.asarray(timesteps, np.int32))
  b = x0.shape[0]

  def at(k):
    t = ts[k]
    tb = jnp.full((b,), t, jnp.int32)

    def one(d, acc):
      eps = jax.vmap(lambda kk: jax.random.normal(
          jax.random.fold_in(jax.random.fold_in(kk, k), d), x0.shape[1:]))(key)
      xt = diffusion.q_sample(schedule, x0, tb, eps)
      out = denoise_fn(xt, tb).astype(jnp.float32)
      _, eps_hat = diffusion.model_output_to_x0_eps(schedule, prediction_type, out, xt, tb,
                                                    clip_x0=False)
      return acc + jnp.mean(jnp.square(eps_hat - eps), axis=tuple(range(1, x0.ndim)))
    return jax.lax.fori_loop(0, num_draws, one, jnp.zeros((b,), jnp.float32)) / num_draws

  return jax.lax.map(at, jnp.arange(len(timesteps))).T


def auroc(normal_scores, anomalous_scores) -> float:
  """P(s_anomalous > s_normal) + P(equal) / 2 over all pairs, from midranks (Mann-Whitney U)."""
  a = np.asarray(normal_scores, np.float64).ravel()
  b = np.asarray(anomalous_scores, np.float64).ravel()
  if len(a) == 0 or len(b) == 0:
    raise ValueError(f"AUROC needs scores of both kinds; got {len(a)} normal, {len(b)} anomalous.")
  if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
    raise ValueError("AUROC scores must be finite.")
  ranks = stats.rankdata(np.concatenate([a, b]))  # Midranks for ties.
  u = ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2.0
  return float(u / (len(a) * len(b)))


def roc_curve(normal_scores, anomalous_scores) -> tuple[np.ndarray, np.ndarray]:
  """(false positive rate, true positive rate) of the threshold rule score > c over all c,
  from (0, 0) to (1, 1)."""
  a, b = np.asarray(normal_scores, np.float64), np.asarray(anomalous_scores, np.float64)
  thresholds = np.unique(np.concatenate([a, b]))[::-1]
  fpr = np.concatenate([[0.0], [(a >= c).mean() for c in thresholds]])
  tpr = np.concatenate([[0.0], [(b >= c).mean() for c in thresholds]])
  return fpr, tpr


def _load(config, spec: str, split: str, num: int, shape) -> np.ndarray:
  """uint8 images from a TFDS dataset name (preprocessed like the training data) or an .npz."""
  if spec.endswith(".npz"):
    if not os.path.isfile(spec):
      raise ValueError(f"config.anomaly.anomalous={spec} does not exist.")
    with np.load(spec) as f:
      if "images" not in f.files:
        raise ValueError(f"config.anomaly.anomalous={spec} has no 'images' array.")
      return features_lib.check_images(f["images"][:num], shape, name=f"images in {spec}")
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.data.dataset = spec
  images, _ = input_pipeline.load_split_uint8(c, split, num)
  return images


def save_figure(path: str, scores: dict, aurocs: dict, normal_name: str, anomalous_name: str
                ) -> str:
  """Histograms of each score for the two sets, and their ROC curves."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top

  names = list(scores)
  fig, axes = plt.subplots(1, len(names) + 1, figsize=(4 * (len(names) + 1), 3.2))
  for ax, name in zip(axes, names):
    normal, anomalous = scores[name]
    lo, hi = np.percentile(np.concatenate([normal, anomalous]), [0.5, 99.5])
    bins = np.geomspace(max(lo, 1e-6), hi, 40) if lo > 0 else np.linspace(lo, hi, 40)
    ax.hist(normal, bins=bins, alpha=0.6, label=f"{normal_name} (normal)")
    ax.hist(anomalous, bins=bins, alpha=0.6, label=f"{anomalous_name} (anomalous)")
    if lo > 0:
      ax.set_xscale("log")
      ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # Decades only.
    ax.set_title(f"{name} score, AUROC {aurocs[name]:.4f}", fontsize=9)
    ax.legend(fontsize=7)
  for name in names:
    fpr, tpr = roc_curve(*scores[name])
    axes[-1].plot(fpr, tpr, label=f"{name} ({aurocs[name]:.4f})")
  axes[-1].plot([0, 1], [0, 1], "k:", lw=0.8)
  axes[-1].set_xlabel("false positive rate")
  axes[-1].set_ylabel("true positive rate")
  axes[-1].set_title("ROC", fontsize=9)
  axes[-1].legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def validate_anomaly_config(config) -> None:
  a = config.anomaly
  names = [s.strip() for s in a.scores.split(",") if s.strip()]
  if not names or any(n not in SCORES for n in names):
    raise ValueError(f"config.anomaly.scores={a.scores!r}; allowed: a comma-separated list of "
                     f"{', '.join(SCORES)}.")
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

  @classmethod
  def setup(cls, config, workdir: str) -> "AnomalyJob":
    from ddpm import config_validation  # pylint: disable=g-import-not-at-top
    config_validation.validate_config(config)
    validate_anomaly_config(config)
    a, shape = config.anomaly, train.image_shape(config)
    normal = _load(config, config.data.dataset, a.normal_split, a.num_images, shape)
    anomalous = _load(config, a.anomalous, a.anomalous_split, a.num_images, shape)
    return cls(config, *sample_job.restore_params(config, workdir), normal, anomalous)

  def run(self) -> dict:
    c, a = self.config, self.config.anomaly
    schedule = schedules.schedule_from_config(c.diffusion)
    model = train.create_model(c)
    names = [s.strip() for s in a.scores.split(",") if s.strip()]
    pt = c.diffusion.prediction_type
    den = jax.jit(lambda p, x, k: denoising_errors(
        sampling.make_denoise_fn(model, p), schedule, x, k, tuple(a.timesteps),
        num_draws=a.num_draws, prediction_type=pt))
    bpd = jax.jit(lambda p, x, k: likelihood.bpd_estimate(
        sampling.make_denoise_fn(model, p), schedule, x, k, num_strata=a.bpd_num_strata,
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
        for i, chunk, n in features_lib.padded_batches(images, a.batch_size):
          x = likelihood.uint8_to_model_range(chunk)
          if name == "denoise":
            keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(i + jnp.arange(len(chunk)))
            vals.append(np.asarray(den(self.params, x, keys), np.float64)[:n])
          else:
            vals.append(np.asarray(bpd(self.params, x, jax.random.fold_in(key, i)), np.float64)[:n])
        v = np.concatenate(vals)
        per_image[f"{name}_{which}"] = v
        outs.append(v.mean(axis=1) if v.ndim == 2 else v)
      scores[name] = tuple(outs)
      results[name] = {"auroc": auroc(*outs), "seconds": time.time() - t0,
                       "mean_normal": float(outs[0].mean()), "mean_anomalous": float(outs[1].mean())}
      if name == "denoise":
        results[name]["auroc_per_timestep"] = {
            int(t): auroc(per_image["denoise_normal"][:, k], per_image["denoise_anomalous"][:, k])
            for k, t in enumerate(a.timesteps)}
      logging.info("%s score: AUROC %.4f (%.0f s).", name, results[name]["auroc"],
                   results[name]["seconds"])
    out_dir = os.path.join(self.workdir, "anomaly")
    os.makedirs(out_dir, exist_ok=True)
    tag = f"{self.step}_{os.path.splitext(os.path.basename(a.anomalous))[0]}"
    aurocs = {n: results[n]["auroc"] for n in names}
    png = save_figure(os.path.join(out_dir, tag + ".png"), scores, aurocs,
                      c.data.dataset, os.path.basename(a.anomalous))
    npz = os.path.join(out_dir, tag + ".npz")
    np.savez_compressed(npz, **per_image)
    path = os.path.join(out_dir, tag + ".json")
    with open(path, "w") as f:
      json.dump(results, f, indent=1)
    logging.info("Wrote %s, %s and %s.", path, png, npz)
    return results | {"json": path, "png": png, "npz": npz, "scores": scores}
