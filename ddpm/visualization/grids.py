"""Image grids a person can look at: uint8 images [N, H, W, C] tiled into one PNG."""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image


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
