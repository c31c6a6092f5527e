r"""A small CNN classifier for MNIST-like data: the feature network of FID, IS and precision/recall.

The Inception-v3 of the standard FID has never seen a handwritten digit; for 28x28 grey
images the usual practice (e.g. the MNIST FIDs of Kynkäänniemi et al. 2019 and many papers)
is a classifier trained on the dataset itself. This one is

  [conv3x3(32) relu maxpool] -> [conv3x3(64) relu maxpool] -> [conv3x3(128) relu maxpool]
  -> dense(128) relu = features (FID, precision/recall) -> dropout -> dense(10) = logits (IS)

trained with Adam on the full training split (`ddpm.training.classifier_fit`), and shipped as
`ddpm/models/assets/classifier_<dataset>.npz` (flat parameter arrays) with
`classifier_<dataset>.json` (test accuracy, command, time). Its FID/IS feature extractor is
`ddpm.evaluation.features.classifier_extractor`.

Reproduce the shipped weights (about a minute per epoch on 2 CPU cores):

  TFDS_DATA_DIR=../shared/data/tensorflow_datasets \
      python -m ddpm.training.classifier_fit --dataset=mnist   # or --dataset=fashion_mnist
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

DATASETS = ("mnist", "fashion_mnist")
IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")


class Classifier(nn.Module):
  """28x28x1 images in [-1, 1] -> (features [B, 128], logits [B, 10]).

  The extractor resizes other sizes (bilinear, antialiased) to 28x28 first.
  """
  channels: tuple[int, ...] = (32, 64, 128)
  feature_dim: int = 128
  dropout: float = 0.3

  @nn.compact
  def __call__(self, x, train: bool = False):
    for ch in self.channels:
      x = nn.relu(nn.Conv(ch, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    feats = nn.relu(nn.Dense(self.feature_dim)(x))
    h = nn.Dropout(self.dropout, deterministic=not train)(feats)
    return feats, nn.Dense(NUM_CLASSES)(h)


def asset_path(dataset: str) -> str:
  return os.path.join(ASSETS, f"classifier_{dataset}.npz")


def check_dataset(dataset: str) -> None:
  if dataset not in DATASETS:
    raise ValueError(f"no project classifier for dataset {dataset!r}; allowed: "
                     f"{', '.join(DATASETS)} (natural images use the FID Inception-v3).")


def save_params(path: str, params) -> None:
  """Writes params as a flat .npz ('Conv_0/kernel', ...), atomically."""
  flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}
  tmp = path + ".tmp.npz"
  np.savez(tmp, **flat)
  os.replace(tmp, path)


def load_params(path: str) -> dict:
  """Nested params from a `save_params` file, checked against the Classifier's shapes."""
  if not os.path.isfile(path):
    raise ValueError(f"classifier weights {path} not found; train them with "
                     f"`python -m ddpm.training.classifier_fit --dataset=<{'|'.join(DATASETS)}> --out={path}`.")
  expected = jax.eval_shape(lambda: Classifier().init(
      jax.random.PRNGKey(0), jnp.zeros((1,) + IMAGE_SHAPE)))["params"]
  flat = {}
  with np.load(path) as f:
    for name, leaf in traverse_util.flatten_dict(expected, sep="/").items():
      if name not in f:
        raise ValueError(f"classifier weights {path} lack array {name!r}; retrain them.")
      if f[name].shape != leaf.shape:
        raise ValueError(f"classifier weights {path}: {name!r} has shape {f[name].shape}, "
                         f"expected {leaf.shape}.")
      flat[name] = jnp.asarray(f[name])
  return traverse_util.unflatten_dict(flat, sep="/")
