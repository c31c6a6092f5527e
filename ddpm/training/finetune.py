r"""Fine-tuning: start from another run's checkpoint and train only the chosen parameters.

`config.training.init_from` names a workdir (or its checkpoints/ directory, or one step's
directory in it) whose checkpoint gives the starting parameters (its EMA parameters with
`config.training.init_params="ema"`, the default, else its raw parameters), or is a
.safetensors file of `--mode=export` (`ddpm.pipelines.pretrained`; it holds one set of
parameters, so init_params does not apply, and an autoguidance guide exported beside them is
not used); the optimizer state and the step start afresh. A
run that already has checkpoints of its own resumes from them instead, so a fine-tuning run
survives restarts like any other.

`config.training.trainable` is a comma-separated list of regular expressions searched in each
parameter's '/'-joined path (e.g. `up_0_res_1/Conv_0/kernel`, see `ddpm.models.unet` for the module
names); matching parameters are trained, the rest are frozen: `optax.multi_transform` gives
them `optax.set_to_zero()`, so they get no update, no optimizer state, and (because the EMA
update is e + (1 - d) (p - e)) stay bit-identical, EMA included. Empty: train everything.
Examples: "^up_,^out_norm,^conv_out" (the decoder), "class_embedding" (new class embeddings
only), "^up_0_" (the last level's blocks).
"""

from __future__ import annotations

import os
import re

import jax
import optax
import orbax.checkpoint as ocp
from absl import logging

from ddpm.pipelines import pretrained
from ddpm.runtime import checkpointing, weights_file

INIT_PARAMS = ("ema", "params")


def param_paths(params) -> list[str]:
  """The '/'-joined paths of the leaves of a parameter pytree, in tree order."""
  return list(checkpointing.param_shapes(params))


def _patterns(spec: str) -> list[str]:
  if not isinstance(spec, str):
    raise ValueError(f"config.training.trainable={spec!r} must be a string of comma-separated "
                     "regular expressions (empty: train every parameter).")
  return [p.strip() for p in spec.split(",") if p.strip()]


def trainable_mask(params, spec: str):
  """A pytree of bools like `params`: True where the path matches one of the patterns in
  `spec` (all True for an empty spec). One-line ValueError for a pattern that is not a valid
  regular expression or that matches no parameter."""
  paths = param_paths(params)
  patterns = _patterns(spec)
  if not patterns:
    return jax.tree_util.tree_map(lambda _: True, params)
  compiled = []
  for p in patterns:
    try:
      compiled.append(re.compile(p))
    except re.error as e:
      raise ValueError(f"config.training.trainable has {p!r}, not a regular expression "
                       f"({e}).") from None
  for p, r in zip(patterns, compiled):
    if not any(r.search(path) for path in paths):
      raise ValueError(f"config.training.trainable pattern {p!r} matches no parameter; "
                       f"parameters are paths under: {', '.join(_top_level(paths))}.")
  flags = [any(r.search(path) for r in compiled) for path in paths]
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), flags)


def _top_level(paths: list[str]) -> list[str]:
  seen = []
  for path in paths:
    top = path.split("/")[0]
    if top not in seen:
      seen.append(top)
  return seen


def partition_optimizer(tx: optax.GradientTransformation, spec: str
                        ) -> optax.GradientTransformation:
  """`tx` on the parameters matching `spec`, `optax.set_to_zero()` on the rest (frozen);
  `tx` itself for an empty spec."""
  if not _patterns(spec):
    return tx
  labels = lambda params: jax.tree_util.tree_map(
      lambda trainable: "trainable" if trainable else "frozen", trainable_mask(params, spec))
  return optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, labels)


def count(params, mask) -> tuple[int, int]:
  """(trainable, frozen) parameter counts."""
  sizes = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda p: p.size, params))
  flags = jax.tree_util.tree_leaves(mask)
  trainable = sum(s for s, f in zip(sizes, flags) if f)
  return trainable, sum(sizes) - trainable


def _checkpoints_and_step(path: str) -> tuple[str, int | None]:
  """(checkpoints directory, step or None for the latest) from a workdir, its checkpoints/
  directory, or a step directory inside it."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise ValueError(f"config.training.init_from={path} is not a directory; allowed: a workdir "
                     "of a trained run, its checkpoints/ directory, a step directory in it, or "
                     "a .safetensors file of --mode=export.")
  if os.path.isdir(os.path.join(path, "checkpoints")):
    return os.path.join(path, "checkpoints"), None
  base = os.path.basename(path)
  if base.isdigit() and os.path.isdir(os.path.join(path, "state")):
    return os.path.dirname(path), int(base)
  return path, None


def _load_file_params(init_from: str, template, meta: dict):
  """(parameters, step) of an exported .safetensors file, checked against this model."""
  try:
    params, settings = weights_file.load(init_from)
    params, _ = pretrained.split_guide(params)  # An autoguidance guide is not fine-tuned.
  except ValueError as e:
    raise ValueError(f"config.training.init_from: {e}") from None
  data = settings.get("data", {})
  image_shape = [data.get("image_size"), data.get("image_size"), data.get("channels")]
  step = int(settings.get("checkpoint_step", 0))
  if image_shape != list(meta["image_shape"]):
    raise ValueError(f"config.training.init_from={init_from} holds a model of {image_shape} "
                     f"images, this run's are {list(meta['image_shape'])}; allowed: a model of "
                     "this run's data.image_size and data.channels.")
  params = pretrained.check_params(params, template, f"config.training.init_from={init_from}")
  logging.info("Initialized from the %s parameters of step %d in %s.",
               settings.get("weights", "ema"), step, init_from)
  return params, step


def load_init_params(init_from: str, template, meta: dict, which: str = "ema"):
  """(parameters, step): the parameters (`which`: "ema" or "params") of the checkpoint named
  by `init_from`, in the structure and dtypes of `template` (this model's parameters), checked
  against its shapes (`meta`, see checkpointing.make_meta) first. A .safetensors file (of
  `--mode=export`) gives the one set of parameters it holds, whatever `which`."""
  if which not in INIT_PARAMS:
    raise ValueError(f"config.training.init_params={which!r} is not allowed; allowed: "
                     f"{', '.join(INIT_PARAMS)}.")
  if init_from.endswith(weights_file.SUFFIX) or os.path.isfile(init_from):
    return _load_file_params(init_from, template, meta)
  directory, step = _checkpoints_and_step(init_from)
  manager = ocp.CheckpointManager(directory, item_names=("state", "meta"),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    if not manager.all_steps():
      raise ValueError(f"config.training.init_from={init_from} holds no checkpoint; allowed: a "
                       "workdir of a trained run, its checkpoints/ directory, or a step in it.")
    step = max(manager.all_steps()) if step is None else step
    params = checkpointing.restore_params(manager, step, template, meta,
                                          "ema_params" if which == "ema" else "params")
  finally:
    manager.close()
  logging.info("Initialized from the %s parameters of checkpoint step %d in %s.", which, step,
               directory)
  return params, step
