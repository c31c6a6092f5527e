"""How good a model is, as numbers.

  metrics           FID, Inception Score, k-NN precision/recall, MSE/PSNR, AUROC (numpy, float64)
  features          the feature extractors those metrics use (project classifier, Inception-v3)
  sample_quality    FID/IS/precision/recall of samples against a cached reference split
  denoiser_quality  bits/dim and denoising PSNR of the model on real test images
  anomaly_scores    per-image denoising errors as anomaly scores
"""

from ddpm.evaluation import anomaly_scores, denoiser_quality, features, metrics, sample_quality
from ddpm.evaluation.features import FeatureExtractor, extractor_for
from ddpm.evaluation.metrics import fid, inception_score, precision_recall

__all__ = ["anomaly_scores", "denoiser_quality", "features", "metrics", "sample_quality",
           "FeatureExtractor", "extractor_for", "fid", "inception_score", "precision_recall"]
