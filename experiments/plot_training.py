"""Figures from a training workdir: the loss curve and the sample grids over training.

  python experiments/plot_training.py --workdir=workdirs/mnist --out=experiments/mnist --image_size=28

writes `loss.png` (per-interval mean loss from metrics.jsonl, log scale) and
`samples_over_training.png` (the first 16 images of each samples/step_*.png grid, one row
per saved step).
"""

import argparse
import glob
import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def plot_loss(workdir: str, out: str) -> str:
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  by_step = {r["step"]: r for r in rows}  # A resumed run may repeat steps; keep the last.
  steps = sorted(by_step)
  fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
  ax.plot(steps, [by_step[s]["loss"] for s in steps], lw=1.2)
  ax.set_yscale("log")
  ax.set_xlabel("training step")
  ax.set_ylabel("L_simple (MSE on eps)")
  ax.set_title(f"{os.path.basename(os.path.normpath(workdir))}: training loss")
  ax.grid(alpha=0.3, which="both")
  fig.tight_layout()
  path = os.path.join(out, "loss.png")
  fig.savefig(path)
  return path


def samples_over_training(workdir: str, out: str, image_size: int, per_row: int = 16) -> str:
  """Cuts the first `per_row` cells out of each grid and stacks them, labelled by step."""
  files = sorted(glob.glob(os.path.join(workdir, "samples", "step_*.png")))
  if not files:
    raise SystemExit(f"no samples/step_*.png in {workdir}")
  fig, axes = plt.subplots(len(files), 1, figsize=(per_row * 0.6, len(files) * 0.7), dpi=120)
  axes = np.atleast_1d(axes)
  for ax, f in zip(axes, files):
    grid = np.asarray(Image.open(f))
    # A grid of k columns of side-s cells with 2-pixel padding is k * (s + 2) + 2 wide.
    cells = []
    s = image_size
    k = (grid.shape[1] - 2) // (s + 2)
    for i in range(min(per_row, k * k)):
      r, c = divmod(i, k)
      y, x = 2 + r * (s + 2), 2 + c * (s + 2)
      cells.append(grid[y:y + s, x:x + s])
    ax.imshow(np.concatenate(cells, axis=1), cmap="gray", vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(re.search(r"step_0*(\d+)", f).group(1), rotation=0, ha="right", va="center")
  fig.suptitle("EMA samples over training (row label: step)")
  fig.tight_layout()
  path = os.path.join(out, "samples_over_training.png")
  fig.savefig(path)
  return path


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--image_size", type=int, default=28)
  a = p.parse_args()
  os.makedirs(a.out, exist_ok=True)
  print(plot_loss(a.workdir, a.out))
  print(samples_over_training(a.workdir, a.out, a.image_size))


if __name__ == "__main__":
  main()
