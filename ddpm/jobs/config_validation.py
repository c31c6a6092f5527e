"""Checks a run's config before anything runs: one-line errors naming the value and what is allowed."""

from __future__ import annotations

from ddpm.data import image_folder, input_pipeline
from ddpm.diffusion import guidance, losses, parameterization, samplers, schedules
from ddpm.models.unet import check_unet_config

_CHOICES = {
    "data.resize_method": input_pipeline.RESIZE_METHODS,
    "data.bad_images": image_folder.BAD_IMAGE_POLICIES,
    "model.dtype": ("float32", "bfloat16"),
    "diffusion.beta_schedule": schedules.SCHEDULES,
    "diffusion.prediction_type": parameterization.PREDICTION_TYPES,
    "diffusion.loss_weighting": losses.WEIGHTINGS,
    "diffusion.timestep_sampling": losses.TIMESTEP_SAMPLINGS,
    "optim.optimizer": ("adam", "adamw"),
    "optim.lr_schedule": ("constant", "cosine"),
    "training.nan_policy": ("stop", "skip"),
    "training.init_params": ("ema", "params"),
    "sampling.method": samplers.SAMPLERS,
    "sampling.variance": samplers.VARIANCES,
    "sampling.spacing": ("uniform", "trailing", "quadratic"),
    "eval.bpd_variance": samplers.VARIANCES,
}

_POSITIVE_INTS = (
    "data.image_size", "data.channels", "data.shuffle_buffer_size", "model.ch",
    "model.num_res_blocks", "model.num_groups", "model.num_heads", "diffusion.num_timesteps",
    "training.batch_size", "training.num_train_steps", "training.log_every_steps",
    "training.num_sample_images", "training.checkpoint_every_steps", "training.keep_checkpoints",
    "sampling.num_steps", "sampling.num_samples", "sampling.batch_size",
    "eval.num_samples", "eval.pr_k", "eval.is_splits", "eval.bpd_num_images",
    "eval.bpd_num_strata", "eval.denoise_num_images", "eval.denoise_ddim_steps", "eval.batch_size",
)
EVAL_METRICS = ("samples", "bpd", "denoise")


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def validate_config(config) -> None:
  """Raises ValueError with a one-line message for the first invalid value in `config`."""
  for key, allowed in _CHOICES.items():
    value = _get(config, key)
    if value not in allowed:
      raise ValueError(f"config.{key}={value!r} is not allowed; allowed: {', '.join(allowed)}.")
  for key in _POSITIVE_INTS:
    value = _get(config, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"config.{key}={value!r} must be a positive integer.")
  if not isinstance(config.data.dataset, str) or not config.data.dataset:
    raise ValueError(f"config.data.dataset={config.data.dataset!r} must name a tfds dataset or "
                     "be 'image_folder' (with data.data_dir=PATH).")
  if config.training.keep_every_steps < 0:
    raise ValueError(f"config.training.keep_every_steps={config.training.keep_every_steps} must "
                     "be >= 0 (0: keep only the newest keep_checkpoints).")
  if config.training.sample_every_steps < 0:
    raise ValueError(
        f"config.training.sample_every_steps={config.training.sample_every_steps} must be >= 0 "
        "(0 disables sample grids).")
  if not 0.0 <= config.model.dropout < 1.0:
    raise ValueError(f"config.model.dropout={config.model.dropout} must be in [0, 1).")
  m = config.model
  if isinstance(m.num_classes, bool) or not isinstance(m.num_classes, int) or m.num_classes < 0:
    raise ValueError(f"config.model.num_classes={m.num_classes!r} must be an integer >= 0 "
                     "(0: unconditional).")
  if not 0.0 <= config.training.label_dropout < 1.0:
    raise ValueError(f"config.training.label_dropout={config.training.label_dropout} must be in "
                     "[0, 1).")
  for key in ("init_from", "trainable"):
    if not isinstance(config.training[key], str):
      raise ValueError(f"config.training.{key}={config.training[key]!r} must be a string.")
  guidance.check_class_label(config.sampling.class_label, m.num_classes)
  if m.num_classes == 0 and config.sampling.guidance_weight != 0:
    raise ValueError(f"config.sampling.guidance_weight={config.sampling.guidance_weight} needs a "
                     "class-conditional model (config.model.num_classes > 0); allowed: 0.")
  if not config.sampling.guidance_weight >= -1.0:
    raise ValueError(f"config.sampling.guidance_weight={config.sampling.guidance_weight} must be "
                     ">= -1 (-1: unconditional, 0: conditional, > 0: guided).")
  s = config.sampling
  if not 0.0 <= s.autoguidance_weight < float("inf"):
    raise ValueError(f"config.sampling.autoguidance_weight={s.autoguidance_weight} must be finite "
                     "and >= 0 (0: off).")
  if s.autoguidance_weight != 0 and (isinstance(s.guide_step, bool) or s.guide_step < 0):
    raise ValueError(f"config.sampling.guide_step={s.guide_step!r} must name the guide's "
                     "checkpoint step (>= 0) when config.sampling.autoguidance_weight="
                     f"{s.autoguidance_weight}.")
  avg = s.get("guide_average_steps", ())
  if not isinstance(avg, (tuple, list)) or any(
      isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in avg):
    raise ValueError(f"config.sampling.guide_average_steps={avg!r} must be a tuple of "
                     "checkpoint steps (integers >= 0) averaged into the guide, e.g. "
                     "(500, 1500); allowed: () for the guide_step checkpoint alone.")
  for key in ("guide_t_min", "guide_t_max"):
    if isinstance(s[key], bool) or not isinstance(s[key], int):
      raise ValueError(f"config.sampling.{key}={s[key]!r} must be an integer time step.")
  last = config.diffusion.num_timesteps - 1
  if (not 0 <= s.guide_t_min <= last or not -1 <= s.guide_t_max <= last
      or (s.guide_t_max >= 0 and s.guide_t_max < s.guide_t_min)):
    raise ValueError(f"config.sampling.guide_t_min={s.guide_t_min}, guide_t_max={s.guide_t_max}: "
                     f"allowed 0 <= guide_t_min <= guide_t_max <= {last} (T - 1), or "
                     "guide_t_max=-1 (T - 1).")
  if not 0.0 <= config.optim.ema_decay < 1.0:
    raise ValueError(f"config.optim.ema_decay={config.optim.ema_decay} must be in [0, 1).")
  if not config.optim.learning_rate > 0:
    raise ValueError(f"config.optim.learning_rate={config.optim.learning_rate} must be > 0.")
  if config.optim.warmup_steps < 0:
    raise ValueError(f"config.optim.warmup_steps={config.optim.warmup_steps} must be >= 0.")
  if config.sampling.num_steps > config.diffusion.num_timesteps:
    raise ValueError(
        f"config.sampling.num_steps={config.sampling.num_steps} must be <= "
        f"config.diffusion.num_timesteps={config.diffusion.num_timesteps}.")
  if config.sampling.eta < 0:
    raise ValueError(f"config.sampling.eta={config.sampling.eta} must be >= 0.")
  ev = config.eval
  for name in [m.strip() for m in ev.metrics.split(",") if m.strip()]:
    if name not in EVAL_METRICS:
      raise ValueError(f"config.eval.metrics has {name!r}; allowed: a comma-separated list of "
                       f"{', '.join(EVAL_METRICS)}.")
  if ev.bpd_num_strata > config.diffusion.num_timesteps:
    raise ValueError(f"config.eval.bpd_num_strata={ev.bpd_num_strata} must be <= "
                     f"config.diffusion.num_timesteps={config.diffusion.num_timesteps}.")
  for sigma in ev.denoise_sigmas:
    if not 0.0 < sigma <= 10.0:
      raise ValueError(f"config.eval.denoise_sigmas has {sigma}; allowed: noise std in (0, 10] "
                       "on the [0, 1] pixel scale.")
  check_unet_config(config.data.image_size, m.ch, tuple(m.ch_mult), m.num_res_blocks,
                    tuple(m.attn_resolutions), m.num_groups)
  schedules.schedule_from_config(config.diffusion)  # Invalid betas raise here.
