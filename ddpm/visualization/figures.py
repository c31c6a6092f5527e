"""Figures with labels (matplotlib, written as PNG): rows of images side by side (original /
noisy / denoised), and the score histograms and ROC curves of anomaly detection."""

from __future__ import annotations

import os

import numpy as np

from ddpm.data import image_arrays
from ddpm.visualization.grids import make_grid


def save_labeled_rows(path: str, rows, labels, title: str | None = None,
                      max_images: int = 8) -> str:
  """A figure of rows of uint8 images [N, H, W, C] (the first `max_images` of each), one row
  per entry with its label on the left (e.g. original / noisy / denoised, side by side)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  if len(rows) != len(labels) or not rows:
    raise ValueError(f"{len(rows)} rows and {len(labels)} labels; need one label per row.")
  strips = []
  for images in rows:
    g = make_grid(np.asarray(images)[:max_images], ncols=min(len(images), max_images))
    strips.append(g[..., 0] if g.shape[-1] == 1 else g)
  h, w = strips[0].shape[:2]
  fig, axes = plt.subplots(len(strips), 1, squeeze=False,
                           figsize=(w / 40 + 1.6, len(strips) * (h / 40 + 0.05) + (0.3 if title else 0)))
  for ax, label, img in zip(axes[:, 0], labels, strips):
    ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
  if title:
    fig.suptitle(title, fontsize=8)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.05)  # Keeps the row labels.
  plt.close(fig)
  return path


def save_denoising_figure(path: str, clean_uint8, pictures: dict, results: dict,
                          num: int = 8) -> str:
  """Rows: original, then for each noise level noisy / one-step / DDPM / DDIM, with labels."""
  rows, labels = [clean_uint8], ["original"]
  for key, outs in pictures.items():
    r = results[key]
    rows.append(image_arrays.to_uint8(np.clip(outs["noisy"], -1, 1)))
    labels.append(f"noisy sigma={key}\n{r['psnr_noisy']:.1f} dB")
    for name, label in (("one_step", "one-step x0"), ("ddpm", f"DDPM from t={r['timestep']}"),
                        ("ddim", "DDIM from t")):
      rows.append(image_arrays.to_uint8(outs[name]))
      labels.append(f"{label}\n{r['psnr_' + name]:.1f} dB")
  return save_labeled_rows(path, rows, labels, max_images=num)


def save_anomaly_figure(path: str, scores: dict, aurocs: dict, rocs: dict, normal_name: str,
                        anomalous_name: str) -> str:
  """Histograms of each anomaly score for the normal and the anomalous set, and the ROC curves
  (`scores`: {name: (normal scores, anomalous scores)}, `aurocs`: {name: AUROC}, `rocs`:
  {name: (false positive rates, true positive rates)}, see `ddpm.evaluation.metrics`)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top

  names = list(scores)
  fig, axes = plt.subplots(1, len(names) + 1, figsize=(4 * (len(names) + 1), 3.2))
  for ax, name in zip(axes, names):
    normal, anomalous = scores[name]
    lo, hi = np.percentile(np.concatenate([normal, anomalous]), [0.5, 99.5])
    bins = np.geomspace(max(lo, 1e-6), hi, 40) if lo > 0 else np.linspace(lo, hi, 40)
    ax.hist(normal, bins=bins, alpha=0.6, label=f"{normal_name} (normal)")
    ax.hist(anomalous, bins=bins, alpha=0.6, label=f"{anomalous_name} (anomalous)")
    if lo > 0:
      ax.set_xscale("log")
      ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # Decades only.
    ax.set_title(f"{name} score, AUROC {aurocs[name]:.4f}", fontsize=9)
    ax.legend(fontsize=7)
  for name in names:
    fpr, tpr = rocs[name]
    axes[-1].plot(fpr, tpr, label=f"{name} ({aurocs[name]:.4f})")
  axes[-1].plot([0, 1], [0, 1], "k:", lw=0.8)
  axes[-1].set_xlabel("false positive rate")
  axes[-1].set_ylabel("true positive rate")
  axes[-1].set_title("ROC", fontsize=9)
  axes[-1].legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
