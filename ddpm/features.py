"""One interface for the networks whose features FID, IS and precision/recall are computed on.

A `FeatureExtractor` maps uint8 images [N, H, W, C] to `Features`: an embedding per image
(float64 [N, d], the space FID and precision/recall work in) and class probabilities
(float64 [N, K], for the Inception Score). Two kinds exist:

  * `ddpm.classifier.classifier_extractor(dataset)`: the project's small CNN trained on
    MNIST or Fashion-MNIST (weights shipped in `ddpm/assets/`), penultimate features and softmax;
  * `ddpm.inception.inception_extractor(weights_path)`: the Inception-v3 of the standard FID
    (pool3 features, 2048-d) for natural images, weights from a file the user provides.

`extractor_for(config)` picks the one that fits the dataset.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Features(NamedTuple):
  features: np.ndarray  # float64 [N, d]
  probs: np.ndarray  # float64 [N, K], rows sum to 1.


def check_images(images, image_shape: tuple[int, int, int] | None = None,
                 name: str = "images") -> np.ndarray:
  """Returns `images` as uint8 [N, H, W, C]; one-line ValueError for anything else.

  Accepted: uint8 in [0, 255], or floats in [-1, 1] (the model's range, rounded as
  `image_grid.to_uint8` does). `image_shape` (H, W, C), when given, must match.
  """
  x = np.asarray(images)
  if x.ndim != 4:
    raise ValueError(f"{name} must be [N, H, W, C], got shape {x.shape}.")
  if image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape):
    raise ValueError(f"{name} have shape {tuple(x.shape[1:])} per image; this model "
                     f"expects {tuple(image_shape)} (H, W, C).")
  if x.dtype == np.uint8:
    return x
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"{name} have dtype {x.dtype}; allowed: uint8 in [0, 255] or float in [-1, 1].")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} contain {int(np.sum(~np.isfinite(x)))} NaN/inf values.")
  lo, hi = float(x.min()), float(x.max())
  if lo < -1.0 - 1e-3 or hi > 1.0 + 1e-3:
    raise ValueError(f"float {name} range over [{lo:.3g}, {hi:.3g}]; allowed: [-1, 1] "
                     f"(or pass uint8 in [0, 255]).")
  return np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """`x` with its last row repeated up to `rows` rows (unchanged if it has as many)."""
  x = np.asarray(x)
  return x if len(x) >= rows else np.concatenate([x, np.repeat(x[-1:], rows - len(x), 0)])


def padded_batches(x: np.ndarray, batch_size: int):
  """Yields (start, batch, n) over `x` in batches of `batch_size`; a short last batch is padded
  by repeating its last row (so a jit-compiled function sees one shape) and n says how many
  rows are real. A set smaller than one batch is passed as it is."""
  for i in range(0, len(x), batch_size):
    chunk = x[i:i + batch_size]
    n = len(chunk)
    if len(x) > batch_size:
      chunk = pad_rows(chunk, batch_size)
    yield i, chunk, n


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
    x = check_images(images, self.image_shape)
    feats, probs = [], []
    for _, chunk, n in padded_batches(x, self.batch_size):
      f, logits = self._jitted(self.variables, jnp.asarray(chunk, jnp.float32) / 127.5 - 1.0)
      feats.append(np.asarray(f, np.float64)[:n])
      probs.append(np.asarray(jax.nn.softmax(logits.astype(jnp.float32)), np.float64)[:n])
    return Features(np.concatenate(feats), np.concatenate(probs))


def extractor_for(config, inception_weights: str | None = None) -> FeatureExtractor:
  """The extractor for `config.data.dataset`: the project classifier or FID Inception-v3."""
  from ddpm import classifier, inception  # pylint: disable=g-import-not-at-top
  name = config.data.dataset
  if name in classifier.DATASETS:
    return classifier.classifier_extractor(name)
  path = inception_weights or config.get("eval", {}).get("inception_weights", "")
  return inception.inception_extractor(path)
