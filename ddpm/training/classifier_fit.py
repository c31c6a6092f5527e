r"""Training the feature classifier (`ddpm.models.classifier`) of FID, IS and precision/recall.

`fit` trains a fresh classifier on uint8 images and labels (also used on synthetic data,
experiments/conditional/augmentation.py); `train_classifier` trains it on a dataset's train
split and reports its test accuracy. The shipped weights come from

  TFDS_DATA_DIR=../shared/data/tensorflow_datasets \
      python -m ddpm.training.classifier_fit --dataset=mnist   # or --dataset=fashion_mnist
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import config_dict

from ddpm.data import image_arrays, input_pipeline
from ddpm.evaluation import features
from ddpm.models import classifier


def _load(dataset: str, split: str, data_dir: str | None):
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
  x_train = image_arrays.check_images(x_train, classifier.IMAGE_SHAPE, name="training images")
  y_train = np.asarray(y_train, np.int32)
  k = classifier.NUM_CLASSES
  if y_train.shape != (len(x_train),) or y_train.min() < 0 or y_train.max() >= k:
    raise ValueError(f"labels must be [N]={len(x_train)} in 0..{k - 1}.")
  model = classifier.Classifier()
  rng = jax.random.PRNGKey(seed)
  params = model.init(rng, jnp.zeros((1,) + classifier.IMAGE_SHAPE))["params"]
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
  classifier.check_dataset(dataset)
  t_start = time.time()
  x_train, y_train = _load(dataset, "train", data_dir)
  x_test, y_test = _load(dataset, "test", data_dir)
  evaluate = lambda p: features.accuracy(features.classifier_extractor(dataset, p), x_test, y_test)
  params, history = fit(x_train, y_train, epochs=epochs, batch_size=batch_size,
                        learning_rate=learning_rate, seed=seed, evaluate=evaluate,
                        log=lambda m: log(f"{dataset} {m}"))
  report = dict(dataset=dataset, test_accuracy=history[-1]["test_accuracy"], epochs=epochs,
                batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                num_train=len(x_train), num_test=len(x_test), history=history,
                seconds=time.time() - t_start, jax_version=jax.__version__)
  return params, report


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description="Train the FID/IS feature classifier.")
  p.add_argument("--dataset", required=True, choices=classifier.DATASETS)
  p.add_argument("--out", default=None, help="weights .npz (default: the shipped asset path)")
  p.add_argument("--epochs", type=int, default=6)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--data_dir", default=None)
  args = p.parse_args(argv)
  out = args.out or classifier.asset_path(args.dataset)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  params, report = train_classifier(args.dataset, epochs=args.epochs, seed=args.seed,
                                    data_dir=args.data_dir)
  classifier.save_params(out, params)
  report["command"] = "python -m ddpm.training.classifier_fit " + " ".join(sys.argv[1:] if argv is None else argv)
  with open(os.path.splitext(out)[0] + ".json", "w") as f:
    json.dump(report, f, indent=1)
  print(f"wrote {out}: test accuracy {report['test_accuracy']:.4f}")


if __name__ == "__main__":
  main()
