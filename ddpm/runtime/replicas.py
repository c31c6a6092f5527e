"""Arrays replicated over the local devices of `jax.pmap`: the device axis and reading one copy."""

from __future__ import annotations

import jax
import numpy as np

AXIS = "batch"  # The pmap axis of devices (training, sampling); replicated arrays use it too.


def first_replica(x) -> np.ndarray:
  """The first local device's copy of a replicated [devices, ...] array, as numpy.

  Copies that device's buffer to the host without running a computation, so it never waits on
  (or deadlocks with) other processes' programs.
  """
  if isinstance(x, jax.Array):
    data = np.asarray(x.addressable_shards[0].data)  # [1, ...] (NamedSharding) or [...].
    return np.asarray(data[0]) if data.ndim == x.ndim else data
  return np.asarray(np.asarray(x)[0])


def unreplicate(tree):
  """`first_replica` of every leaf."""
  return jax.tree_util.tree_map(first_replica, tree)
