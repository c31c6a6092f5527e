r"""Classifier-free guidance on the class-conditional MNIST model: accuracy and quality per weight.

For each guidance weight w, draws N images (N / 10 of each class, image i from key
fold_in(seed, i), so every w starts from the same noise), classifies them with the project's
MNIST classifier (99.30% on real test digits) and reports the accuracy against the requested
class, with FID, Inception Score and precision/recall against the train split (classifier
features, as in experiments/mnist/RESULTS.md). Writes guidance.json, guidance.md,
guidance.png (accuracy and FID vs. w) and a grid per weight (one row per class).

  TFDS_DATA_DIR=../shared/data/tensorflow_datasets python experiments/conditional/guidance_sweep.py \
      --workdir=/path/to/mnist_cond --out=experiments/conditional
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

from configs import mnist_conditional  # noqa: E402
from ddpm.diffusion import guidance  # noqa: E402
from ddpm.evaluation import features, sample_quality as quality  # noqa: E402
from ddpm.jobs import restore  # noqa: E402
from ddpm.pipelines import generation  # noqa: E402
from ddpm.visualization import grids  # noqa: E402


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", required=True)
  p.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
  p.add_argument("--weights", default="-1,0,0.5,1,2,4")
  p.add_argument("--num", type=int, default=1000)
  p.add_argument("--method", default="dpm_solver_pp_2m")
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--spacing", default="quadratic")
  args = p.parse_args()

  c = mnist_conditional.get_config()
  s = c.sampling
  s.method, s.num_steps, s.spacing, s.batch_size = args.method, args.steps, args.spacing, 250
  workdir, params, step = restore.restore_params(c, args.workdir)
  extractor = features.classifier_extractor("mnist")
  ref = quality.reference_statistics(c, extractor, "train", os.path.join(workdir, "eval", "reference"))
  labels = guidance.class_labels(args.num, 10)
  rows = []
  for w in [float(x) for x in args.weights.split(",")]:
    s.guidance_weight = w
    t0 = time.time()
    images, _ = generation.draw(c, params, args.num, labels)
    seconds = time.time() - t0
    probs = extractor(images).probs
    pred = np.argmax(probs, -1)
    q = quality.sample_quality(extractor, images, ref)
    per_class = [float(np.mean(pred[labels == k] == k)) for k in range(10)]
    rows.append(dict(guidance_weight=w, accuracy=float(np.mean(pred == labels)),
                     worst_class_accuracy=min(per_class), per_class_accuracy=per_class,
                     mean_confidence=float(np.mean(probs[np.arange(len(labels)), labels])),
                     seconds=seconds, **{k: q[k] for k in ("fid", "inception_score", "precision", "recall")}))
    print(f"w={w:g}: accuracy {rows[-1]['accuracy']:.4f} (worst class {min(per_class):.3f}), "
          f"FID {q['fid']:.1f}, IS {q['inception_score']:.2f}, precision {q['precision']:.3f}, "
          f"recall {q['recall']:.3f}, {seconds:.0f} s", flush=True)
    shown = np.concatenate([images[labels == k][:10] for k in range(10)])
    grids.save_grid(os.path.join(args.out, f"guidance_w{w:g}.png"), shown, ncols=10, scale=2)

  result = dict(workdir=workdir, checkpoint_step=step, sampler=generation.sampler_name(s).split("_w")[0],
                num_images=args.num, rows=rows, command=" ".join(sys.argv), jax_version=jax.__version__)
  with open(os.path.join(args.out, "guidance.json"), "w") as f:
    json.dump(result, f, indent=1)
  lines = ["| guidance weight w | accuracy (requested class) | worst class | FID | IS | precision | recall | s |",
           "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    note = " (unconditional)" if r["guidance_weight"] == -1 else " (conditional)" if r["guidance_weight"] == 0 else ""
    lines.append(f"| {r['guidance_weight']:g}{note} | {100 * r['accuracy']:.1f}% | "
                 f"{100 * r['worst_class_accuracy']:.1f}% | {r['fid']:.1f} | {r['inception_score']:.2f} | "
                 f"{r['precision']:.3f} | {r['recall']:.3f} | {r['seconds']:.0f} |")
  with open(os.path.join(args.out, "guidance.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))

  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  ws = [r["guidance_weight"] for r in rows]
  fig, ax = plt.subplots(figsize=(5, 3.2))
  ax.plot(ws, [100 * r["accuracy"] for r in rows], "o-", color="C0")
  ax.set_xlabel("guidance weight w (-1: unconditional, 0: conditional)")
  ax.set_ylabel("classified as requested (%)", color="C0")
  ax2 = ax.twinx()
  ax2.plot(ws, [r["fid"] for r in rows], "s--", color="C1")
  ax2.set_ylabel("FID vs. train (classifier features)", color="C1")
  ax.set_title(f"MNIST, step {step}, {result['sampler']}, {args.num} images per w", fontsize=9)
  fig.tight_layout()
  fig.savefig(os.path.join(args.out, "guidance.png"), dpi=120)


if __name__ == "__main__":
  main()
