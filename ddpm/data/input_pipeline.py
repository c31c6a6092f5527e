"""Input pipeline: tensorflow-datasets + tf.data, deterministic and resumable.

Each process reads its own slice of the split (`tfds.split_for_jax_process`). Examples are
decoded, scaled to [-1, 1], padded or resized to `config.data.image_size`, and cached; every
epoch is shuffled with a seed derived from (config.seed, epoch) and optionally flipped with a
stateless per-example seed. The stream is therefore a pure function of (seed, position): a run
restored at step s rebuilds the iterator at exactly the batch it would have seen next.

Batches are dicts of numpy arrays shaped [local_devices, per_device_batch, H, W, C] (images,
float32) and [local_devices, per_device_batch] (labels and each example's index in the split,
int32), ready for `jax.pmap`. With P processes, process p reads the p-th of P contiguous,
disjoint, (almost) equal slices of the split, so the indices say which examples it read.

`config.data.dataset = "image_folder"` reads a folder of the user's images instead of a TFDS
dataset (`ddpm.data.image_folder`: the files, their labels, splits and decoding); everything
after the decoding (shuffling, flips, batching, resumption, per-process slices) is shared.
"""

from __future__ import annotations

import functools
import os
import socket
from typing import Iterator

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from ddpm.data import image_folder
from ddpm.runtime import distributed

RESIZE_METHODS = ("pad", "resize", "none")


@functools.cache
def _load_tensorflow():
  """Imports TensorFlow on first use and keeps it off any GPU/TPU (tf.data only: it must never
  compete with JAX for accelerator memory). Must run before tfds builds a tf.data pipeline."""
  import tensorflow  # pylint: disable=g-import-not-at-top
  try:
    tensorflow.config.set_visible_devices([], "GPU")
    tensorflow.config.set_visible_devices([], "TPU")
  except (RuntimeError, ValueError):  # Already initialized or no such device type.
    pass
  return tensorflow


class _LazyTensorFlow:
  """`tf`: the `tensorflow` module, imported by `_load_tensorflow` on first attribute access.

  Importing TensorFlow costs ~0.5 GB of resident memory, more once it runs; only the input
  pipelines of training and evaluation need it, so merely importing this module (as sampling,
  editing and the benchmark's train step on in-memory data do) does not pay for it.
  """

  def __getattr__(self, name):
    return getattr(_load_tensorflow(), name)


tf = _LazyTensorFlow()


def data_dir_from_config(data_config) -> str | None:
  """`config.data.data_dir`, else $TFDS_DATA_DIR, else None (tfds' default ~/tensorflow_datasets)."""
  return data_config.get("data_dir") or os.environ.get("TFDS_DATA_DIR") or None


IMAGE_FOLDER = image_folder.DATASET  # config.data.dataset of a folder of the user's images.


def get_builder(data_config, num_classes: int = 0):
  """The tfds builder of `config.data.dataset`, with a one-line error if it is unknown; for
  "image_folder" the checked `image_folder.ImageFolder` of data_dir (labelled if num_classes)."""
  name = data_config.dataset
  if name == IMAGE_FOLDER:
    return image_folder.open_folder(data_config, labelled=num_classes > 0)
  try:
    return tfds.builder(name, data_dir=data_dir_from_config(data_config))
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(
        f"config.data.dataset={name!r} is not a tensorflow-datasets dataset; allowed: any name "
        f"in tfds.list_builders(), e.g. mnist, fashion_mnist, cifar10.") from None


DOWNLOAD_HOST = ("storage.googleapis.com", 443)  # Where tfds downloads MNIST-like datasets.


def download_host_unreachable(timeout: float = 5.0) -> str | None:
  """Why tfds' download host cannot be reached (no DNS, no route), or None if it can (or a
  proxy is configured, which then decides)."""
  if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
    return None
  try:
    socket.create_connection(DOWNLOAD_HOST, timeout=timeout).close()
  except OSError as e:
    return f"no network: {DOWNLOAD_HOST[0]}:{DOWNLOAD_HOST[1]} unreachable, {e}"
  return None


def ensure_prepared(builder, data_config) -> None:
  """Downloads and prepares the dataset if needed, with a clear hint when offline."""
  if isinstance(builder, image_folder.ImageFolder) or builder.is_prepared():
    return
  root = data_dir_from_config(data_config) or builder.data_dir
  where = repr(root) if os.path.isdir(root) else f"{root!r}, which does not exist"
  unreachable = download_host_unreachable()
  if unreachable:  # Fail at once instead of minutes of download retries.
    raise RuntimeError(
        f"dataset {data_config.dataset!r} is not prepared in data_dir={where} and cannot be "
        f"downloaded ({unreachable}); set TFDS_DATA_DIR or config.data.data_dir to a "
        "prepared tensorflow_datasets directory.")
  try:
    builder.download_and_prepare()
  except Exception as e:  # Network errors come in many types.
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise RuntimeError(
        f"dataset {data_config.dataset!r} is not prepared in data_dir={builder.data_dir!r} and "
        f"could not be downloaded ({first_line[:200]}); offline, set TFDS_DATA_DIR or "
        f"config.data.data_dir to a prepared tensorflow_datasets directory.") from None


def check_labels(builder, data_config, num_classes: int) -> None:
  """A class-conditional model (num_classes > 0) needs a `label` feature of at most
  num_classes classes; one-line ValueError otherwise."""
  if isinstance(builder, image_folder.ImageFolder):
    builder.check_labels(num_classes)
    return
  if num_classes == 0:
    return
  features = builder.info.features
  have = getattr(features["label"], "num_classes", None) if "label" in features.keys() else None
  if have is None:
    raise ValueError(f"config.model.num_classes={num_classes} but {data_config.dataset!r} has no "
                     "class `label` feature; allowed: 0 (unconditional) for this dataset.")
  if have > num_classes:
    raise ValueError(f"config.model.num_classes={num_classes} but {data_config.dataset!r} has "
                     f"{have} classes; allowed: num_classes >= {have} (or 0: unconditional).")


def preprocess_image(image: tf.Tensor, image_size: int, resize_method: str) -> tf.Tensor:
  """uint8 [h, w, c] -> float32 [image_size, image_size, c] in [-1, 1].

  "pad" centres the image on a -1 (black) canvas; "resize" uses bilinear antialiased
  resizing; "none" requires the image to already have the size.
  """
  x = tf.cast(image, tf.float32) / 127.5 - 1.0
  h, w = image.shape[0], image.shape[1]
  if resize_method == "pad":
    if h > image_size or w > image_size:
      raise ValueError(f"cannot pad {h}x{w} images to image_size={image_size}; use 'resize'.")
    top, left = (image_size - h) // 2, (image_size - w) // 2
    x = tf.pad(x, [[top, image_size - h - top], [left, image_size - w - left], [0, 0]],
               constant_values=-1.0)
  elif resize_method == "resize":
    x = tf.image.resize(x, (image_size, image_size), antialias=True)
    x = tf.clip_by_value(x, -1.0, 1.0)
  elif resize_method == "none":
    if (h, w) != (image_size, image_size):
      raise ValueError(
          f"images are {h}x{w} but config.data.image_size={image_size} and resize_method='none'; "
          f"allowed: set image_size={h} or resize_method to 'pad' or 'resize'.")
  else:
    raise ValueError(
        f"config.data.resize_method={resize_method!r} is unknown; allowed: {', '.join(RESIZE_METHODS)}.")
  return x


def folder_dataset(folder: image_folder.ImageFolder, split) -> tf.data.Dataset:
  """`split` of an image folder, decoded and fitted by `image_folder.read_image` (Pillow, in
  tf.data's parallel map) and scaled to [-1, 1], in path order."""
  indices = folder.indices(split)
  size, channels, method = folder.image_size, folder.channels, folder.resize_method

  def read(path):
    return image_folder.read_image(path.decode(), channels, size, method)

  def prep(path, label):
    image = tf.numpy_function(read, [path], tf.uint8, stateful=False)
    image = tf.ensure_shape(image, (size, size, channels))
    return {"image": preprocess_image(image, size, "none"), "label": label}

  ds = tf.data.Dataset.from_tensor_slices(
      (folder.paths(indices), folder.labels[indices].astype(np.int32)))
  return ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def split_size(builder, split) -> int:
  """How many examples `split` (a name, a slice or a per-process split) has."""
  if isinstance(builder, image_folder.ImageFolder):
    return len(builder.indices(split))
  return builder.info.splits[split].num_examples


def base_dataset(builder, split: str, data_config) -> tf.data.Dataset:
  """`split` decoded and preprocessed (scaled to [-1, 1], padded or resized), in file order."""
  if isinstance(builder, image_folder.ImageFolder):
    return folder_dataset(builder, split)
  ds = builder.as_dataset(split=split, shuffle_files=False)
  size, method = data_config.image_size, data_config.resize_method
  h, w, channels = builder.info.features["image"].shape
  # Check sizes here, outside tf.data's traced map function, for a one-line error.
  if h is not None and w is not None:
    preprocess_image(tf.zeros((h, w, channels), tf.uint8), size, method)
  if channels != data_config.channels:
    raise ValueError(
        f"config.data.channels={data_config.channels} but {data_config.dataset!r} images have "
        f"{channels} channel(s); set config.data.channels={channels}.")

  def prep(ex):
    label = ex["label"] if "label" in ex else tf.constant(0, tf.int64)
    return {"image": preprocess_image(ex["image"], size, method), "label": tf.cast(label, tf.int32)}

  return ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def local_batch_size(global_batch_size: int) -> int:
  """Per-process batch size: global batch / process count, where the global batch must be a
  positive multiple of the device count of all processes (per-device batch x device count)."""
  return distributed.batch_split(global_batch_size, jax.device_count(), jax.local_device_count(),
                                 jax.process_count())[1]


def process_split(builder, split: str, process_index: int, process_count: int):
  """(the tfds split of process `process_index`, index of its first example in `split`).

  The processes' splits are `tfds.split_for_jax_process`: P contiguous, disjoint slices of
  `split` in process order, so process p starts at the sum of the sizes of processes < p.
  """
  offset = sum(split_size(builder, tfds.split_for_jax_process(
      split, process_index=p, process_count=process_count)) for p in range(process_index))
  return tfds.split_for_jax_process(split, process_index=process_index,
                                    process_count=process_count), offset


def create_train_iterator(config, start_step: int = 0) -> Iterator[dict]:
  """Endless iterator of sharded training batches, starting at batch `start_step`.

  The batch at any step depends only on (config.seed, step), not on when the run started.
  """
  _load_tensorflow()
  dc = config.data
  builder = get_builder(dc, config.get("model", {}).get("num_classes", 0))
  ensure_prepared(builder, dc)
  split, first_index = process_split(builder, dc.split, jax.process_index(), jax.process_count())
  batch = local_batch_size(config.training.batch_size)
  ds = base_dataset(builder, split, dc)
  # Each example's index in dc.split, read before shuffling (the split's order).
  ds = ds.enumerate(first_index).map(lambda i, ex: dict(ex, index=tf.cast(i, tf.int32)))
  if dc.cache:
    ds = ds.cache()
  num_examples = int(ds.cardinality())
  if num_examples < batch:
    raise ValueError(f"config.data.split={dc.split!r} of {dc.dataset!r}"
                     f"{' in ' + dc.data_dir if dc.dataset == IMAGE_FOLDER else ''} gives this "
                     f"process {num_examples} examples, fewer than one batch ({batch} per process, "
                     f"training.batch_size={config.training.batch_size}); allowed: a batch of at "
                     f"most {num_examples} per process, or more images.")
  consumed = start_step * batch
  first_epoch, offset = divmod(consumed, num_examples)
  seed = int(config.seed)
  buffer = min(int(dc.shuffle_buffer_size), num_examples)
  random_flip = bool(dc.random_flip)

  def epoch(e):
    ep = ds.shuffle(buffer, seed=tf.cast(seed * 1_000_003 + e, tf.int64),
                    reshuffle_each_iteration=False)

    def flip(i, ex):
      if random_flip:
        s = tf.stack([tf.cast(seed, tf.int64) * 7919 + e, i])
        ex = dict(ex, image=tf.image.stateless_random_flip_left_right(ex["image"], s))
      return ex
    return ep.enumerate().map(flip)

  stream = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(epoch)
  stream = stream.skip(offset).batch(batch, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True
  stream = stream.with_options(options).prefetch(tf.data.AUTOTUNE)
  logging.info("Input: %s split %s (%d examples on this process, from index %d of %s), batch %d "
               "per process, starting at step %d (epoch %d, offset %d).", dc.dataset, split,
               num_examples, first_index, dc.split, batch, start_step, first_epoch, offset)
  return map(shard_batch, tfds.as_numpy(stream))


def shard_batch(batch: dict) -> dict:
  """Reshapes a [local_batch, ...] batch to [local_devices, local_batch / local_devices, ...]."""
  n = jax.local_device_count()
  return jax.tree_util.tree_map(lambda x: x.reshape((n, -1) + x.shape[1:]), batch)


def load_examples(config, split: str, num: int) -> dict:
  """The first `num` preprocessed examples of `split` (no shuffling) as numpy arrays."""
  _load_tensorflow()
  dc = config.data
  builder = get_builder(dc, config.get("model", {}).get("num_classes", 0))
  ensure_prepared(builder, dc)
  ds = base_dataset(builder, split, dc).take(num).batch(num)
  return next(iter(tfds.as_numpy(ds)))


def load_split_uint8(config, split: str, num: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, H, W, C], labels int32 [N]): the first `num` (None: all) examples of
  `split`, preprocessed as for training (size, padding) and mapped back to [0, 255]."""
  _load_tensorflow()
  dc = config.data
  builder = get_builder(dc, config.get("model", {}).get("num_classes", 0))
  ensure_prepared(builder, dc)
  ds = base_dataset(builder, split, dc)
  if num is not None:
    ds = ds.take(num)
  images, labels = [], []
  for b in tfds.as_numpy(ds.batch(2048)):
    images.append(np.round((b["image"] + 1.0) * 127.5).astype(np.uint8))
    labels.append(b["label"])
  if not images:
    raise ValueError(f"split {split!r} of {dc.dataset!r} is empty.")
  return np.concatenate(images), np.concatenate(labels)
