"""How good a model's samples are: FID, Inception Score and k-NN precision/recall against a
reference split, whose statistics are computed once and cached.

FID (Heusel et al. 2017, eq. 6) compares Gaussians fitted to the features of real and generated
images, IS (Salimans et al. 2016) the class distributions of the feature network's softmax,
precision/recall (Kynkaanniemi et al. 2019) the k-NN manifolds of the two feature sets
(`ddpm.evaluation.metrics`); the features come from `ddpm.evaluation.features`.
"""

from __future__ import annotations

import os
import time

import numpy as np
from absl import logging

from ddpm.data import image_folder, input_pipeline
from ddpm.evaluation import features, metrics


def reference_statistics(config, extractor: features.FeatureExtractor, split: str,
                         cache_dir: str | None, num: int = 0, pr_num: int = 10_000) -> dict:
  """FID statistics (mu, sigma) of `split` and features of a seeded subset for precision/recall.

  Cached as <cache_dir>/<dataset>_<split>_<size><resize>_<extractor>_<num>.npz (an image folder's
  <dataset> names a fingerprint of its path and files).
  """
  d = config.data
  dataset = d.dataset
  if dataset == input_pipeline.IMAGE_FOLDER:  # Which folder, and which files in it.
    dataset = f"{dataset}-{image_folder.fingerprint(d.data_dir)}"
  name = f"{dataset}_{split}_{d.image_size}{d.resize_method}_{extractor.name}_{num or 'all'}.npz"
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


def sample_quality(extractor: features.FeatureExtractor, images, reference: dict, *,
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
