"""A user's images on disk: an .npz with an `images` array, a PNG mask; and the .npz a job
writes (atomically). A folder of images is `ddpm.data.image_folder`.

Every reader returns uint8 arrays of the model's image shape [N, H, W, C] (a mask: float32
[H, W, 1], 1 = known), and stops with a one-line ValueError naming the file and the config key
that pointed at it when the file is missing, unreadable or of another shape.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np
from PIL import Image

from ddpm.data import image_arrays
from ddpm.runtime import storage


def read_npz_images(path: str, image_shape, num: int | None = None,
                    config_key: str = "path") -> np.ndarray:
  """The first `num` (None: all) images of the `images` array in the .npz at `path`, checked
  against `image_shape` (H, W, C); errors name `config_key` (e.g. config.eval.samples_npz)."""
  if not os.path.isfile(path):
    raise ValueError(f"{config_key}={path} does not exist.")
  try:
    f = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:  # Not a zip (nor .npy), or truncated.
    raise ValueError(f"{config_key}={path} is not a readable .npz ({type(e).__name__}: "
                     f"{str(e).splitlines()[0][:120] if str(e) else 'empty'}); allowed: an .npz "
                     "with an `images` array, as --mode=sample writes.") from None
  if not isinstance(f, np.lib.npyio.NpzFile):
    raise ValueError(f"{config_key}={path} holds a single array, not an .npz; allowed: an .npz "
                     "with an `images` array, as --mode=sample writes.")
  with f:
    if "images" not in f.files:
      raise ValueError(f"{config_key}={path} has no 'images' array (has: "
                       f"{', '.join(f.files)}).")
    try:
      images = f["images"] if num is None else f["images"][:num]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise ValueError(f"{config_key}={path}: its `images` array cannot be read "
                       f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}).") from None
  return image_arrays.check_images(images, tuple(image_shape), name=f"images in {path}")


def write_npz_atomically(path: str, **arrays) -> str:
  """np.savez_compressed(path, **arrays) through a temporary file renamed into place, so `path`
  is either the complete new file or what it was before (never half-written); OSError (full
  disk, ...) leaves no temporary file behind."""
  return storage.write_atomically(path, lambda f: np.savez_compressed(f, **arrays))


def _image_hw(image_shape) -> tuple[int, int]:
  shape = tuple(int(s) for s in image_shape)
  if len(shape) not in (2, 3) or min(shape) < 1:
    raise ValueError(f"image_shape={tuple(image_shape)} must be (H, W) or (H, W, C).")
  return shape[0], shape[1]


def mask_from_image(path_or_array, image_shape) -> np.ndarray:
  """A mask from a picture (a PNG path or an array [H, W] / [H, W, C]): nonzero = known.

  Returns float32 [H, W, 1] in {0, 1}; a picture of another size than `image_shape` is an error.
  """
  h, w = _image_hw(image_shape)
  where = ""
  if isinstance(path_or_array, (str, os.PathLike)):
    path = os.fspath(path_or_array)
    if not os.path.isfile(path):
      raise ValueError(f"mask image {path} does not exist.")
    try:
      with Image.open(path) as im:
        a = np.asarray(im.convert("L"))
    except OSError as e:
      raise ValueError(f"mask image {path} cannot be read: {e}") from None
    where = f" ({path})"
  else:
    a = np.asarray(path_or_array)
    if a.ndim == 3:
      a = a.max(axis=-1)
    if a.ndim != 2:
      raise ValueError(f"mask array has shape {a.shape}; allowed: [H, W] or [H, W, C].")
  if a.shape != (h, w):
    raise ValueError(f"mask is {a.shape[0]}x{a.shape[1]}{where}, images are {h}x{w}.")
  return (a != 0).astype(np.float32)[..., None]
