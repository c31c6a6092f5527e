r"""Data augmentation with synthetic digits: a small classifier trained on a small real subset,
with and without the class-conditional model's samples, scored on the real MNIST test split.

The synthetic set comes from `--mode=synthesize` (an .npz with images and labels). Every
variant trains the same CNN (ddpm.models.classifier.Classifier, a fresh one) for the same number of
steps (batch 128, Adam, cosine decay), so only the data differs:

  real n/class            : n real training images per class (the first n of each class in a
                            seeded permutation of the train split),
  real n/class + synthetic: the same images plus the whole synthetic set,
  synthetic only          : the synthetic set alone.

  TFDS_DATA_DIR=../shared/data/tensorflow_datasets python experiments/conditional/augmentation.py \
      --synthetic=/path/to/mnist_cond/synthetic/mnist_synthetic.npz --out=experiments/conditional
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from ddpm.evaluation import features  # noqa: E402
from ddpm.training import classifier_fit  # noqa: E402


def real_subset(x, y, per_class: int, seed: int):
  order = np.random.default_rng(seed).permutation(len(y))
  pick = np.concatenate([order[y[order] == k][:per_class] for k in range(10)])
  return x[pick], y[pick]


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--synthetic", required=True)
  p.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
  p.add_argument("--sizes", default="10,100")
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--steps", type=int, default=1000)
  args = p.parse_args()

  x_train, y_train = classifier_fit._load("mnist", "train", None)  # pylint: disable=protected-access
  x_test, y_test = classifier_fit._load("mnist", "test", None)  # pylint: disable=protected-access
  with np.load(args.synthetic) as f:
    x_syn, y_syn = f["images"], f["labels"]
  ext = lambda p_: features.classifier_extractor("mnist", p_)
  seeds = [int(s) for s in args.seeds.split(",")]

  def run(x, y, seed):
    t0 = time.time()
    params, _ = classifier_fit.fit(x, y, epochs=1, batch_size=128, min_steps=args.steps, seed=seed,
                                   log=None)
    acc = features.accuracy(ext(params), x_test, y_test)
    print(f"  {len(x)} training images, seed {seed}: test accuracy {acc:.4f} "
          f"({time.time() - t0:.0f} s)", flush=True)
    return acc

  rows = []
  variants = [("synthetic only", 0, False, True)]
  for n in [int(s) for s in args.sizes.split(",")]:
    variants += [(f"real {n}/class", n, True, False), (f"real {n}/class + synthetic", n, True, True)]
  for name, n, use_real, use_syn in variants:
    print(name, flush=True)
    accs = []
    for seed in seeds:
      parts_x, parts_y = [], []
      if use_real:
        xr, yr = real_subset(x_train, y_train, n, seed)
        parts_x.append(xr), parts_y.append(yr)
      if use_syn:
        parts_x.append(x_syn), parts_y.append(y_syn)
      accs.append(run(np.concatenate(parts_x), np.concatenate(parts_y), seed))
    rows.append(dict(variant=name, real_per_class=n, synthetic=int(len(y_syn)) if use_syn else 0,
                     accuracies=accs, mean=float(np.mean(accs)),
                     std=float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0))
  result = dict(synthetic=args.synthetic, num_synthetic=int(len(y_syn)), steps=args.steps,
                batch_size=128, seeds=seeds, rows=rows, command=" ".join(sys.argv),
                jax_version=jax.__version__)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "augmentation.json"), "w") as f:
    json.dump(result, f, indent=1)
  lines = ["| training data | real images | synthetic images | test accuracy (mean ± std over seeds) |",
           "|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['variant']} | {10 * r['real_per_class']} | {r['synthetic']} | "
                 f"{100 * r['mean']:.2f}% ± {100 * r['std']:.2f} |")
  with open(os.path.join(args.out, "augmentation.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
