r"""Metrics on numbers: FID, Inception Score, k-NN precision/recall, MSE/PSNR, AUROC and ROC.

All take numpy arrays and return floats; they are computed in float64 on the host, since
they are sums over thousands of images where float32 loses digits.

FID (Heusel et al. 2017, eq. 6), between Gaussians fitted to two feature sets:

  FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}).

Tr((S_1 S_2)^{1/2}) is computed stably as sum_i sqrt(lambda_i) over the eigenvalues of the
symmetric PSD matrix S_1^{1/2} S_2 S_1^{1/2} (same spectrum as S_1 S_2), with S_1^{1/2} from
an eigen-decomposition; tiny negative eigenvalues from rounding are clipped to 0.

Inception Score (Salimans et al. 2016, Sec. 5), over `splits` equal parts of the samples:

  IS = exp(E_x KL(p(y|x) || p(y))),  p(y) = E_x p(y|x);  reported as mean and std over splits.

Improved precision and recall (Kynkäänniemi et al. 2019, eq. 1-3) with k = 3: a sample
counts as "inside" a set if it lies within the k-NN radius of some member of the set;

  precision = |{generated inside real}| / |generated|,  recall = |{real inside generated}| / |real|.

AUROC of a score that should rank anomalous images above normal ones: the probability that a
random anomalous image scores higher than a random normal one, ties counting half (the
Mann-Whitney U statistic divided by n m).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats


def _check_features(x, name: str, min_rows: int = 1) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"{name} must be [N, d] feature vectors, got shape {x.shape}.")
  if len(x) < min_rows:
    raise ValueError(f"{name} has {len(x)} rows; at least {min_rows} are needed.")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(x)))} NaN/inf values.")
  return x.astype(np.float64)


class GaussianStats(NamedTuple):
  mu: np.ndarray  # [d]
  sigma: np.ndarray  # [d, d]
  num: int


def gaussian_stats(features, min_samples: int | None = None) -> GaussianStats:
  """Mean and (unbiased) covariance of features [N, d].

  The covariance of N < d + 1 vectors is singular and FID on it meaningless: a one-line error
  says how many samples are needed (`min_samples`, default d + 1).
  """
  x = np.asarray(features)
  d = x.shape[-1] if x.ndim == 2 else 0
  need = d + 1 if min_samples is None else min_samples
  x = _check_features(x, "features", 2)
  if len(x) < need:
    raise ValueError(f"FID on {d}-dimensional features needs at least {need} samples "
                     f"(a non-singular covariance), got {len(x)}.")
  return GaussianStats(x.mean(0), np.cov(x, rowvar=False), len(x))


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((a + a.T) / 2.0)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(stats1: GaussianStats, stats2: GaussianStats) -> float:
  """FID between two Gaussians (Heusel et al. 2017, eq. 6), float64, eigen-decomposition based."""
  mu1, s1 = np.asarray(stats1.mu, np.float64), np.asarray(stats1.sigma, np.float64)
  mu2, s2 = np.asarray(stats2.mu, np.float64), np.asarray(stats2.sigma, np.float64)
  if mu1.shape != mu2.shape or s1.shape != s2.shape:
    raise ValueError(f"FID of features of different sizes: {mu1.shape} vs {mu2.shape}.")
  r1 = _sqrtm_psd(s1)
  m = r1 @ s2 @ r1
  tr_covmean = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2.0), 0.0, None)))
  fid = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
  return max(fid, 0.0)


def fid(features1, features2) -> float:
  """FID between two feature sets [N1, d], [N2, d]."""
  return frechet_distance(gaussian_stats(features1), gaussian_stats(features2))


def inception_score(probs, splits: int = 10) -> tuple[float, float]:
  """(mean, std) over `splits` parts of exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016).

  The rows are split after a fixed random permutation: the definition assumes i.i.d. rows,
  and samples drawn in class blocks (a class-conditional model's one-row-per-class order)
  would otherwise give each split a single class and a score near 1.
  """
  p = _check_features(probs, "probs", splits)
  if np.any(p < 0) or not np.allclose(p.sum(1), 1.0, atol=1e-4):
    raise ValueError("probs must be rows of class probabilities (>= 0, summing to 1).")
  p = p[np.random.default_rng(0).permutation(len(p))]
  scores = []
  for part in np.array_split(p, splits):
    py = part.mean(0, keepdims=True)
    kl = np.sum(part * (np.log(np.clip(part, 1e-30, None)) - np.log(np.clip(py, 1e-30, None))), 1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  d = np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2.0 * a @ b.T
  return np.maximum(d, 0.0)


def knn_radii(features, k: int = 3, chunk: int = 2048) -> np.ndarray:
  """Squared distance of each row to its k-th nearest other row."""
  x = _check_features(features, "features", k + 1)
  out = np.empty(len(x))
  for i in range(0, len(x), chunk):
    d = _sq_dists(x[i:i + chunk], x)
    # Index k: the 0th smallest is the point itself (distance 0).
    out[i:i + chunk] = np.partition(d, k, axis=1)[:, k]
  return out


def _inside(query: np.ndarray, ref: np.ndarray, radii: np.ndarray, chunk: int = 2048) -> np.ndarray:
  inside = np.empty(len(query), bool)
  for i in range(0, len(query), chunk):
    inside[i:i + chunk] = np.any(_sq_dists(query[i:i + chunk], ref) <= radii[None, :], axis=1)
  return inside


def precision_recall(real_features, fake_features, k: int = 3) -> tuple[float, float]:
  """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN radii, k = 3 by default."""
  real = _check_features(real_features, "real features", k + 1)
  fake = _check_features(fake_features, "generated features", k + 1)
  if real.shape[1] != fake.shape[1]:
    raise ValueError(f"feature sizes differ: real {real.shape[1]}, generated {fake.shape[1]}.")
  precision = float(np.mean(_inside(fake, real, knn_radii(real, k))))
  recall = float(np.mean(_inside(real, fake, knn_radii(fake, k))))
  return precision, recall


def mse(x, y) -> np.ndarray:
  """Per-image mean squared error over all pixels, float64 [N]."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape:
    raise ValueError(f"MSE of arrays of different shapes {x.shape} and {y.shape}.")
  return np.mean((x - y) ** 2, axis=tuple(range(1, x.ndim)))


def psnr(x, y, data_range: float) -> np.ndarray:
  """Per-image PSNR in dB: 10 log10(data_range^2 / MSE); data_range 2 for [-1, 1] images."""
  return 10.0 * np.log10(data_range**2 / np.maximum(mse(x, y), 1e-20))


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
