"""Numbered shards of a long image-drawing job on disk, so that a killed job resumes.

A job that draws N images in rounds (`ddpm.pipelines.generation.generate`) writes round i as
`<dir>/shard_<i>.npy` (uint8 [n, H, W, C]) the moment it is drawn, each file written to a
temporary name and renamed, so a shard on disk is always complete. `manifest.json` records what
the shards are of (the caller's identity: sampler, checkpoint, seed, count, batch layout); a
rerun with the same identity reads the shards back and draws only the missing rounds, and one
with another identity starts over (the old shards are removed with a warning). Image i depends
only on its key, so the resumed job returns the same images, bit for bit, as one that was never
interrupted.

A shard that cannot be written (a full disk, a quota) is a warning, not an error: the job goes
on in memory and only loses the ability to resume.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
from absl import logging

from ddpm.runtime import storage

MANIFEST = "manifest.json"


class ImageShards:
  """The shards of one job under `directory`, for the JSON-serialisable `identity`."""

  def __init__(self, directory: str, identity: dict):
    self.directory = os.path.abspath(directory)
    self.identity = json.loads(json.dumps(identity, sort_keys=True))  # Normalised.
    self.writable = True

  def _path(self, index: int) -> str:
    return os.path.join(self.directory, f"shard_{index:06d}.npy")

  def load(self) -> dict[int, np.ndarray]:
    """{round index: images} of the complete shards of this identity; {} for a new job, and
    after removing the shards of another identity."""
    manifest = os.path.join(self.directory, MANIFEST)
    if not os.path.isfile(manifest):
      return {}
    try:
      with open(manifest) as f:
        stored = json.load(f)
    except (OSError, ValueError):
      stored = None
    if stored != self.identity:
      logging.warning("%s holds shards of another job (%s); drawing from the start.",
                      self.directory, "unreadable manifest" if stored is None else "other settings")
      self.remove()
      return {}
    done = {}
    for name in sorted(os.listdir(self.directory)):
      if name.startswith("shard_") and name.endswith(".npy"):
        try:
          done[int(name[len("shard_"):-len(".npy")])] = np.load(os.path.join(self.directory, name))
        except (OSError, ValueError) as e:  # Damaged: drawn again.
          logging.warning("Shard %s is unreadable (%s); drawing it again.", name, e)
    return done

  def save(self, index: int, images: np.ndarray) -> None:
    """Writes round `index`; on an OS error (full disk, ...) warns once and stops writing."""
    if not self.writable:
      return
    try:
      os.makedirs(self.directory, exist_ok=True)
      manifest = os.path.join(self.directory, MANIFEST)
      if not os.path.isfile(manifest):
        storage.write_atomically(manifest, lambda f: f.write(
            json.dumps(self.identity, sort_keys=True).encode()))
      storage.write_atomically(self._path(index), lambda f: np.save(f, images))
    except OSError as e:
      self.writable = False
      logging.warning("Could not write shard %d to %s (%s); going on without resumable shards.",
                      index, self.directory, e.strerror or e)

  def remove(self) -> None:
    """Deletes the shards (once the job's result is safely written)."""
    shutil.rmtree(self.directory, ignore_errors=True)
