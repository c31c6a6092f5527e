"""A folder of a user's images as a dataset: `--config.data.dataset=image_folder
--config.data.data_dir=PATH`.

Every file under PATH (recursively) whose name ends in one of `EXTENSIONS` is an example. The
examples are ordered by a hash of their path relative to PATH (`example_order`): the same order
on every machine, a file added or removed leaves the others' order alone, and the classes and
the dates of `IMG_0001.jpg`-style names are mixed, so that slices such as `train[90%:]` are a
fair held-out sample and not the tail of the last class folder. Labels, for class-conditional
models, come from the first level of subfolders: their sorted names are classes 0..K-1
(`PATH/cat/x.png` is class "cat").

The folder has one split, "train"; tfds' split syntax slices it (`train[:95%]`, `train[-500:]`,
`train[:10]+train[20:]`, and the per-process slices of `tfds.split_for_jax_process`), resolved by
tfds' own `ReadInstruction` as for a TFDS dataset.

Before any training step every image is decoded once (`scan`, in threads, with progress every
10 s): an unreadable or truncated file stops the run with its name, or is skipped and counted
(`data.bad_images`), so nothing fails mid-epoch. Decoding uses Pillow (PNG, JPEG, WebP, BMP,
GIF's first frame; EXIF orientation applied, 16-bit images scaled to 8 bits, transparency
composited onto black), converted to grey (`channels` 1) or RGB (3), then fitted to the square
`image_size` by `fit`:

  resize  the shorter side resized to image_size (box-filtered halvings, then bicubic), then the
          centre image_size x image_size crop: the preprocessing of ADM
          (Dhariwal & Nichol 2021, guided_diffusion/image_datasets.py, `center_crop_arr`);
  pad     the image centred on a black canvas (it must not be larger than image_size);
  none    the image must already be image_size x image_size.

The folder is not loaded at once: images are read as tf.data asks for them
(`ddpm.data.input_pipeline`), and kept there as float32 only if `data.cache` (12 KiB per 32x32
RGB image; turn it off for a folder larger than the memory).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import os
import time

import numpy as np
from absl import logging
from PIL import Image, ImageOps

DATASET = "image_folder"  # The config.data.dataset of a folder.
EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
BAD_IMAGE_POLICIES = ("stop", "skip")
SPLIT = "train"  # The one split of a folder.


def _reason(e: BaseException) -> str:
  text = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def list_image_files(root: str) -> list[str]:
  """The image files under `root` (recursively, symbolic links followed, each directory once
  even if links form a cycle), as paths relative to `root` in sorted order; hidden files and
  folders (".name") are left out."""
  found, seen = [], set()
  for folder, dirs, files in os.walk(root, followlinks=True):
    try:
      st = os.stat(folder)
      if (st.st_dev, st.st_ino) in seen:  # A link back up the tree: walked already.
        dirs[:] = []
        continue
      seen.add((st.st_dev, st.st_ino))
    except OSError:
      continue
    dirs[:] = [d for d in dirs if not d.startswith(".")]
    rel = os.path.relpath(folder, root)
    for name in files:
      if not name.startswith(".") and name.lower().endswith(EXTENSIONS):
        found.append(os.path.normpath(os.path.join(rel, name)))
  return sorted(found)


def example_order(files: list[str]) -> list[str]:
  """`files` in the order of the examples: by the SHA-1 of each relative path (with "/"
  separators), a fixed pseudo-random order that no machine, locale or file added changes."""
  return sorted(files, key=lambda f: (hashlib.sha1(f.replace(os.sep, "/").encode()).digest(), f))


def _to_8_bit(im: Image.Image, channels: int) -> Image.Image:
  """`im` as 8-bit grey ("L") or RGB: EXIF orientation applied, 16/32-bit values scaled down
  (not clipped), transparency composited onto black."""
  im = ImageOps.exif_transpose(im)
  if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
    a = np.asarray(im, np.float64)
    a = a / 257.0 if a.max(initial=0) <= 65535 else a / a.max() * 255.0
    im = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")
  if im.mode == "P":
    im = im.convert("RGBA")
  if im.mode in ("RGBA", "LA", "PA"):
    im = im.convert("RGBA")
    black = Image.new("RGBA", im.size, (0, 0, 0, 255))
    im = Image.alpha_composite(black, im)
  return im.convert("L" if channels == 1 else "RGB")


def fit(image: Image.Image, image_size: int, resize_method: str) -> Image.Image:
  """`image` fitted to image_size x image_size by `resize_method` (see the module docstring);
  ValueError for an image that "pad" or "none" cannot take."""
  w, h = image.size
  if resize_method == "resize":
    if (w, h) == (image_size, image_size):
      return image
    # ADM's center_crop_arr: halve with a box filter while the shorter side stays >= 2 S, then
    # bicubic to a shorter side of exactly S, then the centre crop.
    while min(image.size) >= 2 * image_size:
      image = image.resize(tuple(x // 2 for x in image.size), resample=Image.Resampling.BOX)
    scale = image_size / min(image.size)
    image = image.resize(tuple(max(image_size, round(x * scale)) for x in image.size),
                         resample=Image.Resampling.BICUBIC)
    w, h = image.size
    left, top = (w - image_size) // 2, (h - image_size) // 2
    return image.crop((left, top, left + image_size, top + image_size))
  if resize_method == "pad":
    if w > image_size or h > image_size:
      raise ValueError(f"is {w}x{h}, larger than image_size={image_size}; use "
                       "data.resize_method='resize'")
    canvas = Image.new(image.mode, (image_size, image_size))
    canvas.paste(image, ((image_size - w) // 2, (image_size - h) // 2))
    return canvas
  if resize_method == "none":
    if (w, h) != (image_size, image_size):
      raise ValueError(f"is {w}x{h}, not image_size={image_size}, and data.resize_method='none'; "
                       "use 'resize' (shorter side, centre crop) or 'pad'")
    return image
  raise ValueError(f"data.resize_method={resize_method!r} is unknown; allowed: resize, pad, none")


def read_image(path: str, channels: int, image_size: int, resize_method: str) -> np.ndarray:
  """The image file at `path` as uint8 [image_size, image_size, channels] (grey or RGB, fitted
  by `fit`); ValueError naming the file if it cannot be decoded or fitted."""
  try:
    with Image.open(path) as im:
      im.load()  # Decodes it all: a truncated file fails here, not later.
      im = _to_8_bit(im, channels)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise ValueError(f"{path} is not a readable image ({_reason(e)})") from None
  try:
    im = fit(im, image_size, resize_method)
  except ValueError as e:
    raise ValueError(f"{path} {e}") from None
  return np.asarray(im, np.uint8).reshape(image_size, image_size, channels)


@dataclasses.dataclass(frozen=True)
class ImageFolder:
  """The usable images of a folder: `files` relative to `root`, sorted; `labels` int32 (all 0
  without classes); `class_names` the sorted first-level subfolders (empty: unconditional);
  `skipped` the (file, reason) of every image left out (data.bad_images = "skip"). `files` are
  in example order (`example_order`)."""
  root: str
  files: tuple[str, ...]
  labels: np.ndarray
  class_names: tuple[str, ...]
  skipped: tuple[tuple[str, str], ...]
  channels: int
  image_size: int
  resize_method: str

  @property
  def num_examples(self) -> int:
    return len(self.files)

  def indices(self, split) -> np.ndarray:
    """The example indices of `split`: "train" (everything), a tfds slice of it ("train[:90%]"),
    or a split object of `tfds.split_for_jax_process`; one-line ValueError for other names."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    n = self.num_examples
    infos = {SPLIT: tfds.core.SplitInfo(name=SPLIT, shard_lengths=[n], num_bytes=0)}
    try:
      instruction = (split if hasattr(split, "to_absolute")
                     else tfds.core.ReadInstruction.from_spec(str(split)))
      ranges = instruction.to_absolute(infos)
    except (ValueError, KeyError, AssertionError, NotImplementedError) as e:
      # A per-process split (tfds.split_for_jax_process) names the user's split.
      name = split if isinstance(split, str) else getattr(split, "split", split)
      why = "" if "Unknown split" in str(e) else f" ({_reason(e)})"
      raise ValueError(
          f"split {name!r} of the image folder {self.root}{why}: an image folder has one "
          f"split, {SPLIT!r} ({n} images); allowed: {SPLIT!r} or a slice of it such as "
          f"'{SPLIT}[:95%]' / '{SPLIT}[95%:]' (set data.split, data.eval_split, eval.real_split, "
          "eval.reference_split, anomaly.normal_split accordingly).") from None
    return np.concatenate([np.arange(*slice(r.from_, r.to).indices(n)) for r in ranges]
                          ).astype(np.int64)

  def identity(self) -> dict:
    """What a run trained on this folder depends on: the number of images, a SHA-1 of their
    paths in example order, the class names (compared when a run resumes)."""
    digest = hashlib.sha1("\n".join(self.files).encode()).hexdigest()
    return {"data_dir": self.root, "num_images": self.num_examples, "files_sha1": digest,
            "classes": list(self.class_names), "skipped": len(self.skipped)}

  def paths(self, indices) -> list[str]:
    return [os.path.join(self.root, self.files[i]) for i in indices]

  def check_labels(self, num_classes: int) -> None:
    """Class-conditional models need exactly as many classes as the folder has class folders."""
    k = len(self.class_names)
    if num_classes == 0:
      if k:
        logging.info("Image folder %s: %d subfolders (%s); the model is unconditional "
                     "(model.num_classes=0), so they are not used as labels; set "
                     "model.num_classes=%d to condition on them.", self.root, k,
                     ", ".join(self.class_names[:10]) + (", ..." if k > 10 else ""), k)
      return
    if k != num_classes:
      raise ValueError(
          f"config.model.num_classes={num_classes} but the image folder {self.root} has {k} class "
          f"subfolder(s){' (' + ', '.join(self.class_names[:10]) + ')' if k else ''}; allowed: "
          f"model.num_classes={k}" + (" (or 0: unconditional)." if k else
                                      " (unconditional: put no images in subfolders to use "
                                      "labels, one subfolder per class)."))


def _labels(files: list[str], root: str, labelled: bool) -> tuple[np.ndarray, tuple[str, ...]]:
  """(labels, class names) from the first path component; unlabelled: zeros, no names."""
  tops = [f.split(os.sep, 1)[0] if os.sep in f else "" for f in files]
  names = tuple(sorted({t for t in tops if t}))
  if not labelled or not names:
    return np.zeros((len(files),), np.int32), names
  loose = [f for f, t in zip(files, tops) if not t]
  if loose:
    raise ValueError(f"the image folder {root} has {len(loose)} image(s) outside the class "
                     f"subfolders (e.g. {loose[0]}); a class-conditional model takes its labels "
                     "from the first level of subfolders: move them into one.")
  index = {n: i for i, n in enumerate(names)}
  return np.asarray([index[t] for t in tops], np.int32), names


def _stamp(root: str, files: list[str]) -> tuple:
  """What the scan's result depends on: every file's size and modification time."""
  out = []
  for f in files:
    try:
      st = os.stat(os.path.join(root, f))
      out.append((f, st.st_size, st.st_mtime_ns))
    except OSError:
      out.append((f, -1, -1))
  return tuple(out)


def scan(root: str, files: list[str], channels: int, image_size: int, resize_method: str,
         bad_images: str = "stop", workers: int | None = None) -> tuple[list[int], list]:
  """Decodes and fits every file once, in threads: (indices of the good ones, [(file, reason)]
  of the bad ones). With bad_images "stop" the first bad file (in path order) is a one-line
  ValueError naming it."""
  start, last = time.time(), time.time()
  good, bad = [], []
  paths = [os.path.join(root, f) for f in files]

  def check(path):
    try:
      read_image(path, channels, image_size, resize_method)
      return None
    except ValueError as e:
      return str(e)

  workers = workers or min(16, (os.cpu_count() or 1) + 2)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for i, error in enumerate(pool.map(check, paths, chunksize=64)):
      if error is None:
        good.append(i)
      else:
        bad.append((files[i], error))
        if bad_images == "stop":
          pool.shutdown(wait=True, cancel_futures=True)
          raise ValueError(f"image folder: {error}; fix or remove it, or set "
                           "data.bad_images='skip' to leave such files out.")
      if time.time() - last > 10:
        last = time.time()
        done = i + 1
        rate = done / (last - start)
        logging.info("Checking the image folder %s: %d/%d images (%.0f images/s, ETA %.0f s).",
                     root, done, len(files), rate, (len(files) - done) / rate)
  return good, bad


def fingerprint(root: str) -> str:
  """12 hex digits naming the folder `root` and the path, size and modification time of every
  image file in it: equal while the folder is unchanged (a cache key)."""
  root = os.path.abspath(os.path.expanduser(root))
  return hashlib.sha1(repr((root, _stamp(root, list_image_files(root)))).encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=8)
def _scan_cached(root, stamp, channels, image_size, resize_method, bad_images):
  files = [s[0] for s in stamp]
  good, bad = scan(root, files, channels, image_size, resize_method, bad_images)
  return [files[i] for i in good], bad


def _open(root, stamp, channels, image_size, resize_method, bad_images, labelled):
  files, bad = _scan_cached(root, stamp, channels, image_size, resize_method, bad_images)
  if not files:
    raise ValueError(f"data.data_dir={root}: none of its {len(bad)} image file(s) can be read "
                     f"(e.g. {bad[0][0]}: {bad[0][1]}).")
  files = example_order(files)
  labels, names = _labels(files, root, labelled)
  if bad:
    logging.warning("Image folder %s: skipped %d unreadable image(s) of %d (data.bad_images="
                    "'skip'), e.g. %s.", root, len(bad), len(bad) + len(files), bad[0][1])
  return ImageFolder(root, tuple(files), labels, names, tuple(bad), channels, image_size,
                     resize_method)


def open_folder(data_config, labelled: bool = False) -> ImageFolder:
  """The ImageFolder of config.data (data_dir, channels, image_size, resize_method, bad_images),
  every image checked once per process (a folder whose files changed is checked again); labels
  from the subfolders if `labelled`. One-line ValueError for a missing or empty folder, a bad
  image (bad_images "stop") or a bad setting."""
  root = data_config.get("data_dir", "")
  if not root:
    raise ValueError("config.data.dataset='image_folder' needs config.data.data_dir=PATH, the "
                     "folder of images (PNG, JPEG, WebP, BMP, GIF; searched recursively).")
  root = os.path.abspath(os.path.expanduser(root))
  if not os.path.isdir(root):
    raise ValueError(f"config.data.data_dir={root} is not a folder; allowed: a folder of images "
                     f"({', '.join(EXTENSIONS)}).")
  policy = data_config.get("bad_images", "stop")
  if policy not in BAD_IMAGE_POLICIES:
    raise ValueError(f"config.data.bad_images={policy!r}; allowed: {', '.join(BAD_IMAGE_POLICIES)}.")
  files = list_image_files(root)
  if not files:
    raise ValueError(f"config.data.data_dir={root} holds no image files (looked for "
                     f"{', '.join(EXTENSIONS)} in it and its subfolders).")
  folder = _open(root, _stamp(root, files), int(data_config.channels),
                        int(data_config.image_size), data_config.resize_method, policy,
                        bool(labelled))
  return folder


def read_folder_uint8(path: str, image_shape, num: int | None = None,
                      resize_method: str = "resize", config_key: str = "path") -> np.ndarray:
  """The first `num` (None: all) images under the folder `path` (the order and decoding of an
  image folder dataset) as uint8 [N, H, W, C] of `image_shape` (square); one-line ValueError
  naming `config_key` and the file for an empty folder or a bad image."""
  h, w, c = (int(s) for s in image_shape)
  if h != w:
    raise ValueError(f"image_shape={tuple(image_shape)}: image folders give square images.")
  files = list_image_files(path)[:num]
  if not files:
    raise ValueError(f"{config_key}={path} holds no image files ({', '.join(EXTENSIONS)}).")
  try:
    return np.stack([read_image(os.path.join(path, f), c, h, resize_method) for f in files])
  except ValueError as e:
    raise ValueError(f"{config_key}: {e}; fix or remove it.") from None
