r"""Fine-tuning the class-conditional MNIST model on Fashion-MNIST, against training from scratch.

Three runs of configs/fashion_mnist_finetune.py (batch 64, --steps each: default 800;
experiments/conditional/README.md used 300), through the command line:

  scratch : a fresh model;
  full    : every parameter, starting from the MNIST model's EMA parameters;
  decoder : only the up path, the output layers and the class embedding (trainable =
            "^up_,^out_norm,^conv_out,^class_embedding"); conv_in, the down path and the
            middle stay frozen, and the script checks they are bit-identical to the source.

Each is scored with 1000 class-balanced samples (DPM-Solver++(2M), 20 quadratic steps, guidance
weight 0) by FID/IS/precision/recall in the Fashion-MNIST classifier's features against the
Fashion-MNIST train split. Writes finetune.json, finetune.md and finetune.png (loss curves and
one row of samples per class for each run).

  TFDS_DATA_DIR=../shared/data/tensorflow_datasets python experiments/conditional/finetune_fashion.py \
      --source=/path/to/mnist_cond --runs=/path/to/fashion_runs --out=experiments/conditional
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

from configs import fashion_mnist_finetune  # noqa: E402
from ddpm.diffusion import guidance  # noqa: E402
from ddpm.evaluation import features, sample_quality as quality  # noqa: E402
from ddpm.jobs import restore  # noqa: E402
from ddpm.pipelines import generation  # noqa: E402
from ddpm.runtime import checkpointing  # noqa: E402
from ddpm.training import finetune  # noqa: E402

DECODER = "^up_,^out_norm,^conv_out,^class_embedding"
RUNS = {"scratch": [], "full": ["init_from"], "decoder": ["init_from", f"trainable={DECODER}"]}


def train(name: str, source: str, runs: str, steps: int) -> tuple[str, float]:
  workdir = os.path.join(runs, name)
  args = [sys.executable, "-m", "ddpm.main", "--config=configs/fashion_mnist_finetune.py",
          f"--workdir={workdir}", f"--config.training.num_train_steps={steps}"]
  for spec in RUNS[name]:
    key, _, value = spec.partition("=")
    args.append(f"--config.training.{key}={value or source}")
  t0 = time.time()
  subprocess.run(args, cwd=REPO, check=True)
  return workdir, time.time() - t0


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--source", required=True, help="workdir of the MNIST conditional run")
  p.add_argument("--runs", required=True, help="folder for the three fine-tuning workdirs")
  p.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
  p.add_argument("--steps", type=int, default=800)
  p.add_argument("--num", type=int, default=1000)
  args = p.parse_args()

  c = fashion_mnist_finetune.get_config()
  s = c.sampling
  s.method, s.num_steps, s.spacing, s.batch_size, s.guidance_weight = (
      "dpm_solver_pp_2m", 20, "quadratic", 250, 0.0)
  extractor = features.classifier_extractor("fashion_mnist")
  ref = quality.reference_statistics(c, extractor, "train", os.path.join(args.runs, "reference"))
  labels = guidance.class_labels(args.num, 10)
  _, source_params, source_step = restore.restore_params(c, args.source)
  rows, grids, curves = [], {}, {}
  for name in RUNS:
    workdir = os.path.join(args.runs, name)
    seconds = None
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
      workdir, seconds = train(name, args.source, args.runs, args.steps)
    _, params, step = restore.restore_params(c, workdir)
    images, _ = generation.draw(c, params, args.num, labels)
    q = quality.sample_quality(extractor, images, ref)
    acc = float(np.mean(np.argmax(extractor(images).probs, -1) == labels))
    row = dict(run=name, step=step, train_seconds=seconds, accuracy=acc,
               **{k: q[k] for k in ("fid", "inception_score", "precision", "recall")})
    if name == "decoder":  # Frozen parameters must be the source's, bit for bit.
      mask = checkpointing.leaves_by_path(finetune.trainable_mask(params, DECODER))
      a, b = checkpointing.leaves_by_path(params), checkpointing.leaves_by_path(source_params)
      frozen = [k for k, trainable in mask.items() if not trainable]
      row["frozen_arrays"] = len(frozen)
      row["frozen_parameters"] = int(sum(a[k].size for k in frozen))
      row["trainable_parameters"] = int(sum(a[k].size for k, t in mask.items() if t))
      row["frozen_bit_identical"] = all(np.array_equal(a[k], b[k]) for k in frozen)
    rows.append(row)
    grids[name] = np.concatenate([images[labels == k][:8] for k in range(10)])
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      logs = [json.loads(line) for line in f]
    curves[name] = ([m["step"] for m in logs], [m["loss"] for m in logs])
    print(row, flush=True)

  result = dict(source=os.path.abspath(args.source), source_step=source_step, steps=args.steps,
                num_images=args.num, sampler="dpm_solver_pp_2m20_quadratic, guidance weight 0",
                rows=rows, command=" ".join(sys.argv))
  with open(os.path.join(args.out, "finetune.json"), "w") as f:
    json.dump(result, f, indent=1)
  lines = ["| run | trained parameters | FID | classified as requested | IS | precision | recall | train s |",
           "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    trained = {"scratch": "all (fresh)", "full": "all (from MNIST)"}.get(
        r["run"], f"{r.get('trainable_parameters', 0):,} (frozen: {r.get('frozen_parameters', 0):,}, "
                  f"bit-identical: {r.get('frozen_bit_identical')})")
    secs = f"{r['train_seconds']:.0f}" if r["train_seconds"] else "-"
    lines.append(f"| {r['run']} | {trained} | {r['fid']:.1f} | {100 * r['accuracy']:.1f}% | "
                 f"{r['inception_score']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | {secs} |")
  with open(os.path.join(args.out, "finetune.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))

  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from ddpm.visualization import grids as grid_images  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
  for name, (steps_, losses) in curves.items():
    axes[0].plot(steps_, losses, label=name)
  axes[0].set_yscale("log")
  axes[0].set_xlabel("step")
  axes[0].set_ylabel("training loss (MSE on eps)")
  axes[0].legend()
  for ax, r in zip(axes[1:], rows):
    ax.imshow(grid_images.make_grid(grids[r["run"]], ncols=8)[..., 0], cmap="gray")
    ax.set_title(f"{r['run']}: FID {r['fid']:.1f}", fontsize=10)
    ax.axis("off")
  fig.suptitle(f"Fashion-MNIST after {args.steps} steps: from scratch vs. fine-tuned from the "
               f"MNIST model (step {source_step})", fontsize=10)
  fig.tight_layout()
  fig.savefig(os.path.join(args.out, "finetune.png"), dpi=110)


if __name__ == "__main__":
  main()
