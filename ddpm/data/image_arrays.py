"""The image array conventions: uint8 [N, H, W, C] in [0, 255] on disk and on screen, float32
in [-1, 1] for the model (x / 127.5 - 1, the 256-level grid the likelihood's discretized decoder
assumes), and the checks at that boundary."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def to_uint8(x: np.ndarray) -> np.ndarray:
  """Maps images in [-1, 1] to uint8 [0, 255] (the inverse of the input scaling x/127.5 - 1)."""
  x = np.asarray(x, dtype=np.float32)
  if not np.all(np.isfinite(x)):
    raise ValueError(f"images contain {np.size(x) - np.isfinite(x).sum()} non-finite values.")
  return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def uint8_to_model_range(images) -> jnp.ndarray:
  """uint8 [0, 255] -> float32 on the 256-level grid in [-1, 1] the decoder assumes."""
  return jnp.asarray(images, jnp.float32) / 127.5 - 1.0


def check_images(images, image_shape: tuple[int, int, int] | None = None,
                 name: str = "images") -> np.ndarray:
  """Returns `images` as uint8 [N, H, W, C]; one-line ValueError for anything else.

  Accepted: uint8 in [0, 255], or floats in [-1, 1] (the model's range, rounded as
  `to_uint8` does). `image_shape` (H, W, C), when given, must match.
  """
  x = np.asarray(images)
  if x.ndim != 4:
    raise ValueError(f"{name} must be [N, H, W, C], got shape {x.shape}.")
  if image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape):
    raise ValueError(f"{name} have shape {tuple(x.shape[1:])} per image; this model "
                     f"expects {tuple(image_shape)} (H, W, C).")
  if x.dtype == np.uint8:
    return x
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"{name} have dtype {x.dtype}; allowed: uint8 in [0, 255] or float in [-1, 1].")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} contain {int(np.sum(~np.isfinite(x)))} NaN/inf values.")
  lo, hi = float(x.min()), float(x.max())
  if lo < -1.0 - 1e-3 or hi > 1.0 + 1e-3:
    raise ValueError(f"float {name} range over [{lo:.3g}, {hi:.3g}]; allowed: [-1, 1] "
                     f"(or pass uint8 in [0, 255]).")
  return np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
