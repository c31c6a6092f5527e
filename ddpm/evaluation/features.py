"""One interface for the networks whose features FID, IS and precision/recall are computed on.

A `FeatureExtractor` maps uint8 images [N, H, W, C] to `Features`: an embedding per image
(float64 [N, d], the space FID and precision/recall work in) and class probabilities
(float64 [N, K], for the Inception Score). Two kinds exist:

  * `classifier_extractor(dataset)`: the project's small CNN (`ddpm.models.classifier`) trained
    on MNIST or Fashion-MNIST (weights shipped in `ddpm/models/assets/`), penultimate features
    and softmax;
  * `inception_extractor(weights_path)`: the Inception-v3 of the standard FID
    (`ddpm.models.inception`, pool3 features, 2048-d) for natural images, weights from a file
    the user provides.

`extractor_for(config)` picks the one that fits the dataset.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ddpm.data import batching, image_arrays
from ddpm.models import classifier, inception


class Features(NamedTuple):
  features: np.ndarray  # float64 [N, d]
  probs: np.ndarray  # float64 [N, K], rows sum to 1.


@dataclasses.dataclass
class FeatureExtractor:
  """uint8 images -> Features, in batches through a jit-compiled `apply`.

  `apply(variables, x)` takes the network's weights and float32 [B, H, W, C] in [-1, 1], and
  returns (features [B, d], logits [B, K]). The weights are an argument, not constants baked
  into the compiled program.
  """
  name: str
  apply: Callable[[object, jnp.ndarray], tuple[jnp.ndarray, jnp.ndarray]]
  variables: object
  image_shape: tuple[int, int, int] | None  # None: any size (the network resizes).
  feature_dim: int
  batch_size: int = 500

  def __post_init__(self):
    self._jitted = jax.jit(self.apply)

  def __call__(self, images) -> Features:
    x = image_arrays.check_images(images, self.image_shape)
    feats, probs = [], []
    for _, chunk, n in batching.padded_batches(x, self.batch_size):
      f, logits = self._jitted(self.variables, jnp.asarray(chunk, jnp.float32) / 127.5 - 1.0)
      feats.append(np.asarray(f, np.float64)[:n])
      probs.append(np.asarray(jax.nn.softmax(logits.astype(jnp.float32)), np.float64)[:n])
    return Features(np.concatenate(feats), np.concatenate(probs))


def classifier_extractor(dataset: str, params=None, batch_size: int = 1000) -> FeatureExtractor:
  """FeatureExtractor on the shipped (or given) classifier of `dataset`."""
  classifier.check_dataset(dataset)
  if params is None:
    params = classifier.load_params(classifier.asset_path(dataset))
  model = classifier.Classifier()

  def apply(variables, x):
    if x.shape[-1] != 1:
      raise ValueError(f"the {dataset} classifier takes 1-channel images, got {x.shape[-1]}.")
    if x.shape[1:3] != classifier.IMAGE_SHAPE[:2]:  # E.g. a 16x16 or 32x32 model of MNIST.
      x = jax.image.resize(x, (x.shape[0],) + classifier.IMAGE_SHAPE, "linear", antialias=True)
    return model.apply(variables, x, train=False)

  return FeatureExtractor(f"classifier_{dataset}", apply, {"params": params}, None,
                          model.feature_dim, batch_size)


def inception_extractor(weights_path: str, batch_size: int = 50) -> FeatureExtractor:
  """The FID Inception-v3 as a `FeatureExtractor`: pool3 features (2048-d) and 1008-way logits."""
  variables = inception.load_fid_inception_variables(weights_path)
  return FeatureExtractor(name="inception_v3_fid", apply=inception.InceptionV3().apply,
                          variables=variables, image_shape=None,
                          feature_dim=inception.FEATURE_DIM, batch_size=batch_size)


def accuracy(extractor: FeatureExtractor, images, labels) -> float:
  """The fraction of images whose most probable class (extractor's softmax) is their label."""
  probs = extractor(images).probs
  return float(np.mean(np.argmax(probs, -1) == np.asarray(labels)))


def extractor_for(config, inception_weights: str | None = None) -> FeatureExtractor:
  """The extractor for `config.data.dataset`: the project classifier or FID Inception-v3."""
  name = config.data.dataset
  if name in classifier.DATASETS:
    return classifier_extractor(name)
  path = inception_weights or config.get("eval", {}).get("inception_weights", "")
  return inception_extractor(path)
