"""A parameter pytree and its settings as one self-describing .safetensors file.

The file is plain safetensors (https://github.com/huggingface/safetensors): a little-endian
u64 header length, a JSON header naming every tensor's dtype, shape and byte range, then the
raw bytes. Readers in any language load it without Python pickles or this package.

  tensors   one per leaf of the (nested dict) parameter pytree, named by its '/'-joined path,
            e.g. "down_0_res_0/Conv_0/kernel", in its own dtype (float32, bfloat16, ...)
  metadata  {"format": "ddpm", "format_version": "1", "settings": JSON text}: the settings
            are whatever the writer needs to rebuild the model (`ddpm.pipelines.pretrained`)

`save` writes atomically (`storage.write_atomically`): the path is the whole new file or what
it was before. `load` gives back the same pytree bit for bit and the settings dict.
Any safetensors reader loads the tensors too, e.g. `safetensors.flax.load_file(path)`.
"""

from __future__ import annotations

import json
import os

import numpy as np
import safetensors
import safetensors.flax
from flax import traverse_util

from ddpm.runtime import storage

FORMAT = "ddpm"
FORMAT_VERSION = "1"
SUFFIX = ".safetensors"


def _flat(params) -> dict:
  flat = traverse_util.flatten_dict(params)
  tensors = {}
  for path, value in flat.items():
    for part in path:
      if not isinstance(part, str) or not part or "/" in part:
        raise ValueError(f"parameter path {path!r} has the key {part!r}; allowed: non-empty "
                         "strings without '/'.")
    tensors["/".join(path)] = np.asarray(value)
  return tensors


def to_bytes(params, settings: dict) -> bytes:
  """The .safetensors bytes of the nested dict `params` with `settings` (JSON-serialisable)
  in the metadata."""
  metadata = {"format": FORMAT, "format_version": FORMAT_VERSION,
              "settings": json.dumps(settings, sort_keys=True)}
  return safetensors.flax.save(_flat(params), metadata=metadata)


def save(path: str, params, settings: dict) -> str:
  """Writes `params` (a nested dict of arrays) and `settings` to `path` atomically; returns
  `path`. The parent directory must exist."""
  data = to_bytes(params, settings)
  return storage.write_atomically(path, lambda f: f.write(data))


def _open(path: str):
  if not os.path.isfile(path):
    what = "is a directory" if os.path.isdir(path) else "does not exist"
    raise ValueError(f"{path} {what}; allowed: a {SUFFIX} file written by --mode=export.")
  try:
    return safetensors.safe_open(path, framework="numpy")
  except Exception as e:  # pylint: disable=broad-except  # SafetensorError, OSError, ...
    reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    raise ValueError(f"{path} is not a safetensors file ({reason}); allowed: a {SUFFIX} file "
                     "written by --mode=export.") from None


def _settings(path: str, metadata) -> dict:
  metadata = metadata or {}
  if metadata.get("format") != FORMAT or "settings" not in metadata:
    raise ValueError(f"{path} is a safetensors file without ddpm metadata (format "
                     f"{metadata.get('format')!r}); allowed: a {SUFFIX} file written by "
                     "--mode=export.")
  if metadata.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{path} has ddpm format_version {metadata.get('format_version')!r}; this "
                     f"version of ddpm reads only format_version {FORMAT_VERSION!r}.")
  try:
    settings = json.loads(metadata["settings"])
  except ValueError as e:
    raise ValueError(f"{path}: its ddpm settings are not JSON ({e}).") from None
  if not isinstance(settings, dict):
    raise ValueError(f"{path}: its ddpm settings are a {type(settings).__name__}, not a JSON "
                     "object.")
  return settings


def read_settings(path: str) -> dict:
  """The settings dict of the file at `path`, without reading its tensors; one-line
  ValueError for a missing file, a file that is not safetensors, or one without ddpm metadata."""
  with _open(path) as f:
    return _settings(path, f.metadata())


def load(path: str) -> tuple[dict, dict]:
  """(params, settings) of the file at `path`: the nested dict of arrays as saved (same
  paths, shapes, dtypes and bits), as host numpy arrays like a checkpoint restore gives them
  (so jobs compile the same programs for both; `safetensors.flax.load_file` gives jax arrays),
  and the settings dict. One-line ValueError for a missing file, a file that is not
  safetensors, or one without ddpm metadata."""
  with _open(path) as f:
    settings = _settings(path, f.metadata())
    try:
      flat = {tuple(name.split("/")): f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # pylint: disable=broad-except  # A truncated file.
      reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
      raise ValueError(f"{path}: its tensors cannot be read ({reason}).") from None
  return traverse_util.unflatten_dict(flat), settings

