"""Checkpoints through orbax's CheckpointManager.

A checkpoint `workdir/checkpoints/<step>/` holds two items: `state` (the whole TrainState:
step, params, EMA params, optimizer state, RNG key) and `meta` (JSON: the model config, the
image shape and every parameter's shape). Orbax writes each checkpoint into a temporary
directory and renames it when complete, so a killed save never leaves a half-written
checkpoint behind; saves are asynchronous and `wait_until_finished` is called before exit.

Before restoring, the stored parameter shapes are compared with the model's, so a checkpoint
of another model shape stops with a one-line error instead of a deep orbax traceback.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging


class CheckpointMismatchError(ValueError):
  """The checkpoint was written by a model of another shape."""


def param_shapes(params) -> dict[str, list[int]]:
  """{'/'-joined parameter path: shape} of a parameter pytree."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): list(np.shape(v)) for path, v in flat}


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def create_manager(workdir: str, max_to_keep: int | None = 3,
                   save_interval_steps: int = 1) -> ocp.CheckpointManager:
  """A manager for `workdir/checkpoints` keeping the newest `max_to_keep` checkpoints."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, save_interval_steps=save_interval_steps, create=True,
      enable_async_checkpointing=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=("state", "meta"))


def make_meta(state, model_config, image_shape) -> dict[str, Any]:
  return {"model": dict(model_config), "image_shape": list(image_shape),
          "param_shapes": param_shapes(state.params)}


def save(manager: ocp.CheckpointManager, step: int, state, meta: dict, force: bool = False) -> bool:
  """Saves an (unreplicated, host or device) state at `step`; returns whether it saved."""
  saved = manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)
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


def restore(manager: ocp.CheckpointManager, state, meta: dict, step: int | None = None):
  """Restores the checkpoint at `step` (default: latest) into the structure of `state`.

  Returns `state` unchanged if there is no checkpoint. Raises CheckpointMismatchError if the
  checkpoint's parameter shapes differ from `state`'s, and ValueError for a missing step.
  """
  steps = manager.all_steps()
  if step is None:
    step = manager.latest_step()
    if step is None:
      return state
  elif step not in steps:
    raise ValueError(f"checkpoint step {step} is not in {manager.directory}; available: {sorted(steps)}.")
  stored_meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  check_compatible(stored_meta, meta, step, manager.directory)
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  logging.info("Restored checkpoint at step %d from %s.", step, manager.directory)
  return restored["state"]
