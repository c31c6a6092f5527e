r"""Converts pytorch-fid's FID Inception weights (.pth) to the .npz `ddpm.models.inception` loads.

Get the weights (about 95 MB) from pytorch-fid's release page:

  https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

and convert them:

  python experiments/inception/convert_pt_inception.py pt_inception-2015-12-05-6726825d.pth \
      fid_inception.npz

The .npz keeps the torch state_dict names and layouts (`Conv2d_1a_3x3.conv.weight` OIHW,
`fc.weight` [out, in], ...); `ddpm.models.inception.load_fid_inception_variables` checks and transposes
them. `num_batches_tracked` counters are dropped.

torch is not a dependency of this package. Two readers:
  --reader=torch   `torch.load(..., weights_only=True)` (needs torch installed);
  --reader=pickle  a small torch-free reader of torch's file formats (the zip format of torch
                   >= 1.6 and the older legacy format) for float tensor state dicts, numpy only;
  --reader=auto    (default) torch when it is installed, else pickle.
If `ddpm` (jax, flax) is importable, the result is checked against the Flax network's table.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import zipfile
from collections import OrderedDict

import numpy as np

_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
           "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Storage:
  def __init__(self, dtype):
    self.dtype, self.data = dtype, None


class _LazyTensor:
  """A tensor whose storage bytes may come after the pickle (legacy format)."""

  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

  def numpy(self) -> np.ndarray:
    data = self.storage.data
    if not self.size:
      return np.array(data[self.offset])
    item = data.itemsize
    return np.lib.stride_tricks.as_strided(data[self.offset:], self.size,
                                           tuple(s * item for s in self.stride),
                                           writeable=False).copy()


def _rebuild_tensor(storage, offset, size, stride, *unused):
  return _LazyTensor(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
  """Allows only what a tensor state_dict holds: OrderedDicts, typed storages, tensors."""

  def __init__(self, f, load_storage):
    super().__init__(f)
    self._load_storage = load_storage

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return OrderedDict
    if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      return lambda data, *unused: data
    if module == "torch" and name in _DTYPES:
      return _DTYPES[name]
    raise ValueError(f"the torch-free reader cannot load {module}.{name}; use --reader=torch.")

  def persistent_load(self, pid):
    kind = pid[0].decode() if isinstance(pid[0], bytes) else pid[0]
    if kind != "storage":
      raise ValueError(f"the torch-free reader cannot load a pickled {kind!r}; use --reader=torch.")
    return self._load_storage(*pid[1:])


def _read_zip(path: str):
  with zipfile.ZipFile(path) as z:
    pkl = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
    if pkl is None:
      raise ValueError("a zip file but not a torch one (no data.pkl).")
    prefix = pkl[:-len("data.pkl")]
    if prefix + "byteorder" in z.namelist() and z.read(prefix + "byteorder") != b"little":
      raise ValueError("big-endian tensors: use --reader=torch.")
    cache = {}

    def load_storage(dtype, key, unused_location, unused_numel):
      if key not in cache:
        cache[key] = _Storage(dtype)
        cache[key].data = np.frombuffer(z.read(f"{prefix}data/{key}"), dtype)
      return cache[key]

    with z.open(pkl) as f:
      return _Unpickler(f, load_storage).load()


def _read_legacy(path: str):
  with open(path, "rb") as f:
    if pickle.load(f) != _LEGACY_MAGIC:
      raise ValueError("neither a torch zip file nor a legacy torch file.")
    pickle.load(f)  # Protocol version.
    if not pickle.load(f).get("little_endian", True):
      raise ValueError("big-endian tensors: use --reader=torch.")
    storages, views = {}, {}

    def load_storage(dtype, key, unused_location, unused_numel, view=None):
      storages.setdefault(key, _Storage(dtype))
      if view is None:
        return storages[key]
      view_key, offset, size = view
      views.setdefault(view_key, (_Storage(dtype), key, offset, size))
      return views[view_key][0]

    obj = _Unpickler(f, load_storage).load()
    for key in pickle.load(f):
      s = storages[key]
      numel = int(np.frombuffer(f.read(8), "<i8")[0])
      s.data = np.frombuffer(f.read(numel * np.dtype(s.dtype).itemsize), s.dtype)
    for view, key, offset, size in views.values():
      view.data = storages[key].data[offset:offset + size]
    return obj


def read_pth(path: str, reader: str = "auto") -> dict[str, np.ndarray]:
  """A torch state_dict file -> {name: numpy array}, without `num_batches_tracked`."""
  if reader == "auto":
    try:
      import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
      reader = "torch"
    except ImportError:
      reader = "pickle"
  if reader == "torch":
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      sys.exit("--reader=torch needs torch (not a dependency of ddpm): `pip install torch`, "
               "or use --reader=pickle.")
    state = {k: v.detach().cpu().numpy() for k, v in
             torch.load(path, map_location="cpu", weights_only=True).items()}
  else:
    raw = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    state = {k: v.numpy() if isinstance(v, _LazyTensor) else np.asarray(v) for k, v in raw.items()}
  return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def save_npz(state: dict[str, np.ndarray], out: str) -> None:
  """Writes the state dict (floats as float32) to `out`, atomically."""
  tmp = out + ".tmp.npz"
  np.savez(tmp, **{k: np.asarray(v, np.float32) if np.issubdtype(np.asarray(v).dtype, np.floating)
                   else np.asarray(v) for k, v in state.items()})
  os.replace(tmp, out)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  p.add_argument("pth", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth")
  p.add_argument("npz", help="output .npz")
  p.add_argument("--reader", choices=("auto", "torch", "pickle"), default="auto")
  args = p.parse_args(argv)
  if not os.path.isfile(args.pth):
    sys.exit(f"{args.pth} not found; download https://github.com/mseitzer/pytorch-fid/releases/"
             f"download/fid_weights/pt_inception-2015-12-05-6726825d.pth")
  try:
    state = read_pth(args.pth, args.reader)
    try:
      sys.path.insert(0, _REPO)
      from ddpm.models import inception  # pylint: disable=g-import-not-at-top
    except ImportError:
      inception = None
    if inception is not None:
      inception.variables_from_state_dict(state, source=args.pth)
  except Exception as e:  # pylint: disable=broad-except  (one line, not a traceback)
    lines = str(e).strip().splitlines()
    sys.exit(f"error: {args.pth}: {lines[0] if lines else type(e).__name__}")
  save_npz(state, args.npz)
  print(f"wrote {len(state)} arrays to {args.npz}"
        f"{' (checked against ddpm.models.inception)' if inception else ' (unchecked: no jax/ddpm here)'}")


if __name__ == "__main__":
  main()
