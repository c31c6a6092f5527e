"""Writing image arrays as a TFDS dataset that `tfds.load` and this package's training read."""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

VERSION = "1.0.0"


def write_tfds_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, name: str,
                       data_dir: str, description: str = "") -> str:
  """Writes uint8 images [N, H, W, C] and int labels [N] as the "train" split of a TFDS dataset
  `name` in `data_dir` (in that order, unshuffled); returns its directory. The dataset is built
  in a temporary directory and moved into place, so a failure leaves nothing half-written."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  final = os.path.join(data_dir, name)
  if os.path.exists(final):
    raise ValueError(f"a dataset {name!r} already exists in {data_dir}; allowed: another "
                     "config.synthesize.name, or remove it first.")
  os.makedirs(data_dir, exist_ok=True)
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=images.shape[1:]),
      "label": tfds.features.ClassLabel(num_classes=num_classes)})
  ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels.astype(np.int64)})
  with tempfile.TemporaryDirectory(dir=data_dir, prefix=f".{name}.tmp") as tmp:
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version=VERSION, features=features, split_datasets={"train": ds},
        data_dir=tmp, description=description, disable_shuffling=True)
    os.replace(os.path.join(tmp, name), final)
    shutil.rmtree(os.path.join(tmp, "downloads"), ignore_errors=True)
  return os.path.join(final, VERSION)
