"""Turning model outputs into images a person can look at (uint8 arrays, PNG grids)."""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image


def to_uint8(x: np.ndarray) -> np.ndarray:
  """Maps images in [-1, 1] to uint8 [0, 255] (the inverse of the input scaling x/127.5 - 1)."""
  x = np.asarray(x, dtype=np.float32)
  if not np.all(np.isfinite(x)):
    raise ValueError(f"images contain {np.size(x) - np.isfinite(x).sum()} non-finite values.")
  return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, ncols: int | None = None, padding: int = 2,
              pad_value: int = 255) -> np.ndarray:
  """Tiles uint8 images [N, H, W, C] into one [rows*(H+p)+p, cols*(W+p)+p, C] image."""
  images = np.asarray(images)
  if images.ndim != 4 or images.dtype != np.uint8:
    raise ValueError(f"make_grid needs uint8 images [N, H, W, C], got {images.dtype} {images.shape}.")
  n, h, w, c = images.shape
  ncols = ncols or int(math.ceil(math.sqrt(n)))
  nrows = int(math.ceil(n / ncols))
  grid = np.full((nrows * (h + padding) + padding, ncols * (w + padding) + padding, c),
                 pad_value, np.uint8)
  for i in range(n):
    r, col = divmod(i, ncols)
    y, x = padding + r * (h + padding), padding + col * (w + padding)
    grid[y:y + h, x:x + w] = images[i]
  return grid


def save_png(path: str, image: np.ndarray) -> str:
  """Writes a uint8 [H, W, C] (C = 1 or 3) image as PNG, creating parent directories."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  image = np.asarray(image)
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)
  return path


def save_grid(path: str, images: np.ndarray, ncols: int | None = None, scale: int = 1) -> str:
  """Saves uint8 images [N, H, W, C] as one PNG grid, upscaled `scale` times (nearest)."""
  grid = make_grid(images, ncols)
  if scale > 1:
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
  return save_png(path, grid)


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
