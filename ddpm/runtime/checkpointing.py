"""Checkpoints through orbax's CheckpointManager.

A checkpoint `workdir/checkpoints/<step>/` holds two items: `state` (the whole TrainState:
step, params, EMA params, optimizer state, RNG key) and `meta` (JSON: the model config, the
image shape and every parameter's shape). Orbax writes each checkpoint into a temporary
directory and renames it when complete, so a killed save never leaves a half-written
checkpoint behind; saves are asynchronous and `wait_until_finished` is called before exit.

Before restoring, the stored parameter shapes are compared with the model's, so a checkpoint
of another model shape stops with a one-line error instead of a deep orbax traceback.

Several processes (`ddpm.runtime.distributed`) share one checkpoint directory: all of them call
`save` and `restore` with the same (replicated, host numpy) state; orbax writes such arrays
from process 0 only (its NumpyHandler) and synchronizes the processes around each save, and
every process reads the whole checkpoint back. Only process 0 moves a damaged checkpoint aside.
"""

from __future__ import annotations

import os
import shutil
import weakref
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from ddpm.runtime import distributed, storage


class CheckpointMismatchError(ValueError):
  """The checkpoint was written by a model of another shape."""


class CheckpointWriteError(storage.WriteError):
  """A checkpoint could not be written (full disk, quota, I/O error, read-only filesystem)."""


def remove_partial_writes(directory) -> list[str]:
  """Deletes orbax's temporary directories (unfinished checkpoint writes) in `directory`; only
  the run holding the workdir lock calls this. Returns what it removed."""
  removed = []
  directory = str(directory)
  for name in os.listdir(directory) if os.path.isdir(directory) else ():
    if ".orbax-checkpoint-tmp" in name:
      shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
      removed.append(name)
  return removed


def _write_failed(manager, step, error: BaseException) -> CheckpointWriteError:
  reason = storage.storage_error(error)
  removed = remove_partial_writes(manager.directory)
  try:
    kept = sorted(int(n) for n in os.listdir(str(manager.directory)) if n.isdigit())
  except OSError:
    kept = []
  return CheckpointWriteError(
      f"cannot write checkpoint step {step} to {manager.directory} ({reason}); removed its partial "
      f"write ({len(removed)} temporary dir(s)), the earlier checkpoints {kept or 'none'} are "
      "intact: free space and rerun the same command to resume from the newest.")


_PENDING: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # manager -> step of its last save.


def wait_until_finished(manager: ocp.CheckpointManager, step: int | None = None) -> None:
  """Waits for the asynchronous save (of `step`, default: the last one `save` started);
  CheckpointWriteError (one line) if the storage refused it."""
  step = _PENDING.get(manager) if step is None else step
  try:
    manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except  # Orbax and TensorStore raise many types.
    if storage.storage_error(e) is None:
      raise
    raise _write_failed(manager, step, e) from None


def leaves_by_path(tree) -> dict[str, Any]:
  """{'/'-joined path: leaf} of a pytree."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path): v
          for path, v in flat}


def nonfinite_arrays(tree) -> list[str]:
  """Paths of the floating-point leaves of `tree` that hold a NaN or an infinity."""
  return [name for name, v in leaves_by_path(tree).items()
          if np.issubdtype(np.asarray(v).dtype, np.floating) and not np.all(np.isfinite(v))]


def param_shapes(params) -> dict[str, list[int]]:
  """{'/'-joined parameter path: shape} of a parameter pytree."""
  return {name: list(np.shape(v)) for name, v in leaves_by_path(params).items()}


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def create_manager(workdir: str, max_to_keep: int | None = 3, save_interval_steps: int = 1,
                   keep_period: int = 0, keep_steps=()) -> ocp.CheckpointManager:
  """A manager for `workdir/checkpoints` keeping the newest `max_to_keep` checkpoints.

  With `keep_period` > 0, checkpoints whose step is a multiple of it are kept as well, and so
  are those at `keep_steps` (e.g. the checkpoints an autoguidance guide is made of). This is
  orbax's own default policy for max_to_keep and keep_period, with CustomSteps added.
  `save_interval_steps` applies to saves without force=True (the trainer decides and forces).
  """
  if max_to_keep is not None and max_to_keep < 0:
    raise ValueError(f"max_to_keep={max_to_keep} must be None (all) or >= 0.")
  policies = [ocp.checkpoint_managers.LatestN(max_to_keep)]
  if keep_period:
    policies.append(ocp.checkpoint_managers.EveryNSteps(keep_period))
  if keep_steps:
    policies.append(ocp.checkpoint_managers.CustomSteps(sorted({int(s) for s in keep_steps})))
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=save_interval_steps, create=True, enable_async_checkpointing=True,
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies))
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=("state", "meta"))


def make_meta(params, model_config, image_shape) -> dict[str, Any]:
  """The `meta` item of a checkpoint: model config, image shape, every parameter's shape."""
  return {"model": dict(model_config), "image_shape": list(image_shape),
          "param_shapes": param_shapes(params)}


def save(manager: ocp.CheckpointManager, step: int, state, meta: dict, force: bool = False) -> bool:
  """Saves an (unreplicated, host or device) state at `step`; returns whether it saved.

  Raises FloatingPointError, writing nothing, if any array of the state is not finite.
  """
  bad = nonfinite_arrays(state)
  if bad:
    raise FloatingPointError(
        f"refusing to write checkpoint step {step}: {len(bad)} array(s) hold NaN/Inf, e.g. {bad[0]}.")
  # The previous asynchronous save had a whole interval to finish: waiting for it costs nothing
  # and makes its failure (a full disk) surface here, naming its step.
  wait_until_finished(manager, _PENDING.get(manager))
  try:
    saved = manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)
  except Exception as e:  # pylint: disable=broad-except  # Orbax and TensorStore raise many types.
    if storage.storage_error(e) is None:
      raise
    raise _write_failed(manager, step, e) from None
  if saved:
    _PENDING[manager] = step
  if saved:
    logging.info("Saving checkpoint at step %d to %s (async).", step, manager.directory)
  return saved


def check_compatible(stored_meta: dict, meta: dict, step: int, directory) -> None:
  """Raises CheckpointMismatchError naming the first parameter whose shape differs."""
  stored, current = stored_meta.get("param_shapes", {}), meta["param_shapes"]
  diffs = []
  for name in sorted(set(stored) | set(current)):
    if stored.get(name) != current.get(name):
      diffs.append(f"{name}: checkpoint {stored.get(name)} vs model {current.get(name)}")
  if diffs or stored_meta.get("image_shape") != meta["image_shape"]:
    cfg = [f"{k}={stored_meta['model'].get(k)!r} (config has {v!r})"
           for k, v in meta["model"].items() if stored_meta.get("model", {}).get(k) != v]
    detail = diffs[0] if diffs else (
        f"image shape {stored_meta.get('image_shape')} vs {meta['image_shape']}")
    raise CheckpointMismatchError(
        f"checkpoint step {step} in {directory} was written by a model of another shape "
        f"({len(diffs)} parameter(s) differ, e.g. {detail}"
        + (f"; model config differs: {', '.join(cfg)}" if cfg else "")
        + "); use the config it was trained with or another --workdir.")


def restore_params(manager: ocp.CheckpointManager, step: int, template, meta: dict,
                   which: str = "ema_params"):
  """The `which` ("ema_params" or "params") parameters of checkpoint `step`, in the structure
  and dtypes of `template`, after checking the stored shapes against `meta`.

  Only the parameters are taken, so the optimizer of the run that wrote the checkpoint (e.g.
  a fine-tuning run that froze some parameters) does not matter. Raises ValueError for a
  missing step or non-finite parameters, CheckpointMismatchError for other shapes.
  """
  if step not in manager.all_steps():
    raise ValueError(f"checkpoint step {step} is not in {manager.directory}; "
                     f"available: {sorted(manager.all_steps())}.")
  stored_meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  check_compatible(stored_meta, meta, step, manager.directory)
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  stored = leaves_by_path(state[which])
  leaves = jax.tree_util.tree_leaves(template)
  params = jax.tree_util.tree_unflatten(
      jax.tree_util.tree_structure(template),
      [np.asarray(stored[name], leaf.dtype) for name, leaf in zip(leaves_by_path(template), leaves)])
  bad = nonfinite_arrays(params)
  if bad:
    raise ValueError(f"checkpoint step {step} in {manager.directory} holds NaN/Inf in {bad[0]}.")
  return params


def mean_params(trees):
  """The element-wise mean (1/K) sum_k theta_k of K >= 1 parameter trees of one structure, as
  numpy arrays of the first tree's dtypes (accumulated in float64, so one tree comes back bit
  for bit): a uniform weight average
  of checkpoints, as stochastic weight averaging (Izmailov et al. 2018, eq. 2) and post-hoc
  EMA reconstructions (Karras et al. 2024, EDM2, sec. 3) average snapshots of one run."""
  trees = list(trees)
  if not trees:
    raise ValueError("mean_params needs at least one parameter tree; got none.")
  structure = jax.tree_util.tree_structure(trees[0])
  for i, tree in enumerate(trees[1:], 1):
    if jax.tree_util.tree_structure(tree) != structure:
      raise ValueError(f"mean_params: tree {i} has another structure than tree 0.")
  return jax.tree_util.tree_map(
      lambda *xs: (sum(np.asarray(x, np.float64) for x in xs) / len(xs)).astype(
          np.asarray(xs[0]).dtype), *trees)


def restore_mean_params(manager: ocp.CheckpointManager, steps, template, meta: dict,
                        which: str = "ema_params"):
  """`mean_params` of the `which` parameters of the checkpoints at `steps` (one step: exactly
  its parameters, since a float64 mean of one value is that value), each read and checked by
  `restore_params`."""
  return mean_params(restore_params(manager, s, template, meta, which) for s in steps)


def _quarantine(manager: ocp.CheckpointManager, step: int, reason: str) -> str:
  """Moves an unreadable checkpoint to checkpoints_corrupt/ (never deletes it) and reloads.

  With several processes, process 0 moves it while the others wait for it at a barrier.
  """
  src = os.path.join(str(manager.directory), str(step))
  dst_root = os.path.join(os.path.dirname(str(manager.directory)), "checkpoints_corrupt")
  dst = os.path.join(dst_root, str(step))
  if jax.process_index() == 0:
    os.makedirs(dst_root, exist_ok=True)
    n = 1
    while os.path.exists(dst):
      dst, n = os.path.join(dst_root, f"{step}.{n}"), n + 1
    os.rename(src, dst)
  distributed.barrier(f"quarantine_{step}")  # The others wait for the move.
  manager.reload()
  logging.warning("Checkpoint step %d is unreadable (%s); moved it to %s and trying the next "
                  "older one.", step, reason, dst)
  return dst


def _restore_step(manager: ocp.CheckpointManager, state, meta: dict, step: int):
  stored_meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  check_compatible(stored_meta, meta, step, manager.directory)
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  restored = restored["state"]
  bad = nonfinite_arrays(restored)
  if bad:
    raise FloatingPointError(f"{bad[0]} holds NaN/Inf")
  return restored


def restore(manager: ocp.CheckpointManager, state, meta: dict, step: int | None = None):
  """Restores the checkpoint at `step` (default: the newest readable one) into `state`'s structure.

  Returns `state` unchanged if there is no checkpoint. Raises CheckpointMismatchError if the
  checkpoint's parameter shapes differ from `state`'s, and ValueError for a missing step.
  Without `step`, a checkpoint that cannot be read (truncated or corrupted files, NaNs) is
  moved to `checkpoints_corrupt/` with a warning and the next older one is tried; nothing is
  ever deleted.
  """
  if step is not None:
    if step not in manager.all_steps():
      raise ValueError(f"checkpoint step {step} is not in {manager.directory}; "
                       f"available: {sorted(manager.all_steps())}.")
    restored = _restore_step(manager, state, meta, step)
  else:
    for candidate in sorted(manager.all_steps(), reverse=True):
      try:
        restored = _restore_step(manager, state, meta, candidate)
        step = candidate
        break
      except CheckpointMismatchError:
        raise
      except Exception as e:  # Orbax/TensorStore raise many types for damaged files.
        _quarantine(manager, candidate, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    else:
      return state
  logging.info("Restored checkpoint at step %d from %s.", step, manager.directory)
  return restored
