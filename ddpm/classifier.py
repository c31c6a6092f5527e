r"""A small CNN classifier for MNIST-like data: the feature network of FID, IS and precision/recall.

The Inception-v3 of the standard FID has never seen a handwritten digit; for 28x28 grey
images the usual practice (e.g. the MNIST FIDs of Kynkäänniemi et al. 2019 and many papers)
is a classifier trained on the dataset itself. This one is

  [conv3x3(32) relu maxpool] -> [conv3x3(64) relu maxpool] -> [conv3x3(128) relu maxpool]
  -> dense(128) relu = features (FID, precision/recall) -> dropout -> dense(10) = logits (IS)

trained with Adam on the full training split, and shipped as `ddpm/assets/classifier_<dataset>.npz`
(flat parameter arrays) with `classifier_<dataset>.json` (test accuracy, command, time).

Reproduce the shipped weights (about a minute per epoch on 2 CPU cores):

  TFDS_DATA_DIR=../shared/data/tensorflow_datasets python -m ddpm.classifier --dataset=mnist
  TFDS_DATA_DIR=../shared/data/tensorflow_datasets python -m ddpm.classifier --dataset=fashion_mnist
"""

from __future__ import annotations

import json
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from ddpm import features as features_lib

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
                     f"`python -m ddpm.classifier --dataset=<{'|'.join(DATASETS)}> --out={path}`.")
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


def classifier_extractor(dataset: str, params=None, batch_size: int = 1000
                         ) -> features_lib.FeatureExtractor:
  """FeatureExtractor on the shipped (or given) classifier of `dataset`."""
  check_dataset(dataset)
  if params is None:
    params = load_params(asset_path(dataset))
  model = Classifier()

  def apply(variables, x):
    if x.shape[-1] != 1:
      raise ValueError(f"the {dataset} classifier takes 1-channel images, got {x.shape[-1]}.")
    if x.shape[1:3] != IMAGE_SHAPE[:2]:  # E.g. a 16x16 or 32x32 model of MNIST.
      x = jax.image.resize(x, (x.shape[0],) + IMAGE_SHAPE, "linear", antialias=True)
    return model.apply(variables, x, train=False)

  return features_lib.FeatureExtractor(f"classifier_{dataset}", apply, {"params": params}, None,
                                       model.feature_dim, batch_size)


def accuracy(extractor: features_lib.FeatureExtractor, images, labels) -> float:
  probs = extractor(images).probs
  return float(np.mean(np.argmax(probs, -1) == np.asarray(labels)))


def _load(dataset: str, split: str, data_dir: str | None):
  from ml_collections import config_dict  # pylint: disable=g-import-not-at-top
  from ddpm import input_pipeline  # pylint: disable=g-import-not-at-top
  c = config_dict.ConfigDict({"data": dict(dataset=dataset, data_dir=data_dir or "", image_size=28,
                                           channels=1, resize_method="none")})
  return input_pipeline.load_split_uint8(c, split)


def fit(x_train, y_train, *, epochs: int = 6, batch_size: int = 128, learning_rate: float = 1e-3,
        seed: int = 0, min_steps: int = 0, evaluate=None, log=print) -> tuple[dict, list]:
  """Trains a fresh Classifier on uint8 images [N, 28, 28, 1] and int labels [N] with Adam and
  a cosine-decayed rate; returns (params, history per epoch).

  `min_steps` raises the number of epochs so that at least that many steps run (small training
  sets); `evaluate(params) -> accuracy` is called after each epoch if given.
  """
  x_train = features_lib.check_images(x_train, IMAGE_SHAPE, name="training images")
  y_train = np.asarray(y_train, np.int32)
  if y_train.shape != (len(x_train),) or y_train.min() < 0 or y_train.max() >= NUM_CLASSES:
    raise ValueError(f"labels must be [N]={len(x_train)} in 0..{NUM_CLASSES - 1}.")
  model = Classifier()
  rng = jax.random.PRNGKey(seed)
  params = model.init(rng, jnp.zeros((1,) + IMAGE_SHAPE))["params"]
  batch_size = min(batch_size, len(x_train))
  steps_per_epoch = len(x_train) // batch_size
  epochs = max(epochs, -(-min_steps // steps_per_epoch))
  lr = optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch)
  tx = optax.adam(lr)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y, key):
    def loss_fn(p):
      _, logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  history = []
  np_rng = np.random.default_rng(seed)
  for epoch in range(epochs):
    t0 = time.time()
    order = np_rng.permutation(len(x_train))
    losses = []
    for i in range(steps_per_epoch):
      idx = order[i * batch_size:(i + 1) * batch_size]
      x = jnp.asarray(x_train[idx], jnp.float32) / 127.5 - 1.0
      params, opt_state, loss = step(params, opt_state, x, jnp.asarray(y_train[idx]),
                                     jax.random.fold_in(rng, epoch * steps_per_epoch + i))
      losses.append(loss)
    entry = dict(epoch=epoch + 1, loss=float(np.mean(jax.device_get(losses))),
                 seconds=time.time() - t0)
    if evaluate is not None:
      entry["test_accuracy"] = evaluate(params)
    history.append(entry)
    if log:
      log(f"epoch {epoch + 1}/{epochs}: loss {entry['loss']:.4f}"
          + (f", test accuracy {entry['test_accuracy']:.4f}" if evaluate else "")
          + f", {entry['seconds']:.0f} s ({steps_per_epoch * batch_size / entry['seconds']:.0f} images/s)")
  return params, history


def train_classifier(dataset: str, *, epochs: int = 6, batch_size: int = 128,
                     learning_rate: float = 1e-3, seed: int = 0, data_dir: str | None = None,
                     log=print) -> tuple[dict, dict]:
  """Trains the classifier on the train split; returns (params, report with test accuracy)."""
  check_dataset(dataset)
  t_start = time.time()
  x_train, y_train = _load(dataset, "train", data_dir)
  x_test, y_test = _load(dataset, "test", data_dir)
  evaluate = lambda p: accuracy(classifier_extractor(dataset, p), x_test, y_test)
  params, history = fit(x_train, y_train, epochs=epochs, batch_size=batch_size,
                        learning_rate=learning_rate, seed=seed, evaluate=evaluate,
                        log=lambda m: log(f"{dataset} {m}"))
  report = dict(dataset=dataset, test_accuracy=history[-1]["test_accuracy"], epochs=epochs,
                batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                num_train=len(x_train), num_test=len(x_test), history=history,
                seconds=time.time() - t_start, jax_version=jax.__version__)
  return params, report


def main(argv=None) -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description="Train the FID/IS feature classifier.")
  p.add_argument("--dataset", required=True, choices=DATASETS)
  p.add_argument("--out", default=None, help="weights .npz (default: the shipped asset path)")
  p.add_argument("--epochs", type=int, default=6)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--data_dir", default=None)
  args = p.parse_args(argv)
  out = args.out or asset_path(args.dataset)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  params, report = train_classifier(args.dataset, epochs=args.epochs, seed=args.seed,
                                    data_dir=args.data_dir)
  save_params(out, params)
  report["command"] = "python -m ddpm.classifier " + " ".join(sys.argv[1:] if argv is None else argv)
  with open(os.path.splitext(out)[0] + ".json", "w") as f:
    json.dump(report, f, indent=1)
  print(f"wrote {out}: test accuracy {report['test_accuracy']:.4f}")


if __name__ == "__main__":
  main()
