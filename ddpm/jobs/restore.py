"""The parameters of a run's checkpoint, as every job but training reads them, or of the
.safetensors file that config.sampling.pretrained names (`ddpm.pipelines.pretrained`)."""

from __future__ import annotations

import os

import jax
from absl import logging

from ddpm.models import build
from ddpm.pipelines import denoiser, pretrained
from ddpm.runtime import checkpointing


def restore_params(config, workdir: str) -> tuple[str, object, int]:
  """(absolute workdir, parameters, step) of the checkpoint chosen by config.sampling
  (checkpoint_step, -1: the newest readable one; use_ema); one-line errors when there is none.

  Only the parameters are read (`checkpointing.restore_params`), so checkpoints of any
  optimizer setup, fine-tuning runs with frozen parameters included, can be sampled from.

  With config.sampling.pretrained, the parameters and step are those of that file instead, and
  the workdir (which then only receives outputs) need not exist; `config` must carry the file's
  settings (`ddpm.jobs.setup_job` sees to that), else a one-line error names the difference.
  """
  workdir = os.path.abspath(workdir)
  if config.sampling.pretrained:
    params, settings = pretrained.load_params(config.sampling.pretrained, config)
    step = int(settings.get("checkpoint_step", 0))
    logging.info("Read the %s parameters of step %d from %s (config.sampling.pretrained).",
                 settings.get("weights", "ema"), step, config.sampling.pretrained)
    return workdir, params, step
  if not os.path.isdir(checkpointing.checkpoint_dir(workdir)):
    raise ValueError(f"--workdir={workdir} has no checkpoints/ directory; train first "
                     f"(--mode=train) or point --workdir at a trained run.")
  shape = build.image_shape(config)
  template = jax.eval_shape(lambda: build.init_params(build.create_model(config),
                                                      jax.random.PRNGKey(0), shape))
  meta = checkpointing.make_meta(template, config.model, shape)
  manager = checkpointing.create_manager(workdir, max_to_keep=None)
  which = "ema_params" if config.sampling.use_ema else "params"
  try:
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
      raise ValueError(f"--workdir={workdir} holds no checkpoint; train first (--mode=train).")
    if config.sampling.checkpoint_step >= 0:
      step = config.sampling.checkpoint_step
      return workdir, checkpointing.restore_params(manager, step, template, meta, which), step
    # A run training in this workdir writes new checkpoints and deletes old ones meanwhile:
    # a step that vanished while it was read is retried from a fresh listing.
    for attempt in range(3):
      if attempt:
        manager.reload()
        steps = sorted(manager.all_steps(), reverse=True)
      vanished = False
      for step in steps:
        try:
          return workdir, checkpointing.restore_params(manager, step, template, meta, which), step
        except checkpointing.CheckpointMismatchError:
          raise
        except Exception as e:  # A damaged checkpoint: orbax/TensorStore raise many types.
          gone = not os.path.isdir(os.path.join(checkpointing.checkpoint_dir(workdir), str(step)))
          vanished |= gone
          logging.warning("Checkpoint step %d is %s (%s); trying the next older one.", step,
                          "gone (deleted by the training run's retention)" if gone else
                          "unreadable", str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
      if not vanished:  # Only damaged checkpoints: reading them again would not help.
        break
    raise ValueError(f"--workdir={workdir}: no checkpoint could be read (steps {steps}).")
  finally:
    manager.close()


def restore_guide_params(config, workdir: str, model_step: int | None = None):
  """The autoguidance guide's parameters: the mean (`checkpointing.mean_params`) of checkpoints
  config.sampling.guide_step and guide_average_steps of `workdir` (EMA or raw by
  config.sampling.guide_use_ema; one step: its parameters), or the guide exported in the file
  of config.sampling.pretrained; None when autoguidance is off. A guide not older than the
  model's checkpoint `model_step` gets a warning: it is the model itself, or a stronger one
  (anti-guidance)."""
  s = config.sampling
  if not denoiser.autoguided(s):
    return None
  if s.pretrained:  # The guide exported with the file.
    params, _ = pretrained.load_params(s.pretrained, config, guide=True)
    logging.info("Autoguidance: the guide is the one exported in %s, weight %g.", s.pretrained,
                 s.autoguidance_weight)
    return params
  steps = denoiser.guide_steps(s)
  guide_config = config.copy_and_resolve_references()
  guide_config.sampling.pretrained = ""
  guide_config.sampling.use_ema = s.guide_use_ema
  trees = []
  for step in steps:
    guide_config.sampling.checkpoint_step = step
    try:
      trees.append(restore_params(guide_config, workdir)[1])
    except ValueError as e:
      if step == s.guide_step:
        raise ValueError(f"config.sampling.guide_step={step}: {e} Sampling without "
                         "autoguidance: config.sampling.autoguidance_weight=0.") from None
      raise ValueError(f"config.sampling.guide_average_steps={tuple(s.guide_average_steps)} "
                       f"(step {step}): {e} A guide of the guide_step checkpoint alone: "
                       "config.sampling.guide_average_steps=(); sampling without autoguidance: "
                       "config.sampling.autoguidance_weight=0.") from None
  if model_step is not None and steps[-1] >= model_step:
    logging.warning("Autoguidance by step %d of a model of step %d: the guide should be an "
                    "earlier, weaker checkpoint (config.sampling.guide_step, "
                    "guide_average_steps).", steps[-1], model_step)
  logging.info("Autoguidance: the guide is %s, weight %g.", denoiser.describe_guide(s),
               s.autoguidance_weight)
  return checkpointing.mean_params(trees)
