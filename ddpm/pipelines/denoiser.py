"""A trained network as the math's denoiser: f(x_t, t) -> model output, guided or not.

Samplers, losses, the likelihood bound and RePaint (`ddpm.diffusion`) take a `denoise_fn(x_t,
t)`; `make_denoise_fn` binds a Flax model and its parameters to that signature with dropout
off, and for a class-conditional model adds the labels and classifier-free guidance
(`ddpm.diffusion.guidance`); with a guide's parameters (a weaker checkpoint of the same
network) it adds autoguidance on top.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ddpm.diffusion import guidance


def make_denoise_fn(model: nn.Module, params, labels=None, guidance_weight: float = 0.0,
                    guide_params=None, autoguidance_weight: float = 0.0,
                    guide_t_range: tuple[int, int] | None = None):
  """f(x_t, t) -> model output, with dropout off.

  For a class-conditional model (model.num_classes > 0): the output for `labels` [B] guided
  with weight `guidance_weight` (`ddpm.diffusion.guidance.guided_denoise_fn`), or without labels the
  unconditional output (the null label). An unconditional model takes neither.
  With `autoguidance_weight` w != 0, the result is (1 + w) f - w f_guide, where f_guide is the
  same function of `guide_params` (`ddpm.diffusion.guidance.autoguided_denoise_fn`), for the
  time steps in `guide_t_range` (lo, hi) only, if given.
  """
  if autoguidance_weight != 0:
    check_guide(dict(autoguidance_weight=autoguidance_weight), guide_params)
    return guidance.autoguided_denoise_fn(
        make_denoise_fn(model, params, labels, guidance_weight),
        make_denoise_fn(model, guide_params, labels, guidance_weight), autoguidance_weight,
        guide_t_range)
  num_classes = getattr(model, "num_classes", 0)
  if num_classes == 0:
    if labels is not None:
      raise ValueError("class labels were given for an unconditional model "
                       "(config.model.num_classes=0).")
    if guidance_weight != 0:
      raise ValueError(f"config.sampling.guidance_weight={guidance_weight} needs a "
                       "class-conditional model (config.model.num_classes > 0); allowed: 0.")
    return lambda x, t: model.apply({"params": params}, x, t, train=False)
  apply = lambda x, t, y: model.apply({"params": params}, x, t, y, train=False)
  if labels is None:  # The null label: the unconditional model.
    return lambda x, t: apply(x, t, jnp.full((x.shape[0],), num_classes, jnp.int32))
  return guidance.guided_denoise_fn(apply, labels, num_classes, guidance_weight)


AUTOGUIDANCE_KEYS = ("autoguidance_weight", "guide_step", "guide_average_steps", "guide_use_ema",
                     "guide_t_min", "guide_t_max")


def autoguidance_settings(sampling_config) -> dict:
  """config.sampling's autoguidance keys as a plain dict ({} when it is off), as results and
  exported files record them."""
  s = sampling_config
  return {k: s[k] for k in AUTOGUIDANCE_KEYS} if autoguided(s) else {}


def autoguided(sampling_config) -> bool:
  """Whether config.sampling asks for autoguidance (a nonzero autoguidance_weight)."""
  return float(sampling_config.get("autoguidance_weight", 0.0)) != 0.0


def guide_steps(sampling_config) -> tuple[int, ...]:
  """The checkpoint steps the autoguidance guide is the parameter mean of, ascending:
  config.sampling.guide_step and guide_average_steps (`checkpointing.mean_params`)."""
  s = sampling_config
  return tuple(sorted({int(s["guide_step"])} | {int(x) for x in s.get("guide_average_steps", ())}))


def describe_guide(sampling_config) -> str:
  """"the EMA parameters of step 1000", or "the mean of the EMA parameters of steps 500, 1000,
  1500" (`guide_steps`), for log lines."""
  steps = guide_steps(sampling_config)
  kind = "EMA" if sampling_config.get("guide_use_ema", True) else "raw"
  if len(steps) == 1:
    return f"the {kind} parameters of step {steps[0]}"
  return f"the mean of the {kind} parameters of steps {', '.join(map(str, steps))}"


def check_guide(sampling_config, guide_params) -> None:
  """One-line ValueError when config.sampling asks for autoguidance and there is no guide."""
  if autoguided(sampling_config) and guide_params is None:
    raise ValueError(f"config.sampling.autoguidance_weight={sampling_config['autoguidance_weight']} "
                     "needs the guide's parameters (config.sampling.guide_step, or a file "
                     "exported with its guide); allowed without them: 0.")


def guide_t_range(sampling_config, num_timesteps: int) -> tuple[int, int] | None:
  """The time steps (lo, hi) autoguidance applies to (config.sampling.guide_t_min and
  guide_t_max, -1: T - 1), or None for all of them."""
  s = sampling_config
  lo, hi = int(s.get("guide_t_min", 0)), int(s.get("guide_t_max", -1))
  hi = num_timesteps - 1 if hi < 0 else min(hi, num_timesteps - 1)
  return None if (lo, hi) == (0, num_timesteps - 1) else (lo, hi)


def sampling_denoise_fn(model: nn.Module, params, sampling_config, num_timesteps: int,
                        labels=None, guide_params=None):
  """`make_denoise_fn` with config.sampling's guidance: classifier-free (guidance_weight, for
  `labels`) and autoguidance (autoguidance_weight, guide_t_min/max) by `guide_params`."""
  s = sampling_config
  w_auto = float(s.get("autoguidance_weight", 0.0))
  return make_denoise_fn(model, params, labels, float(s.get("guidance_weight", 0.0)),
                         guide_params if w_auto else None, w_auto,
                         guide_t_range(s, num_timesteps) if w_auto else None)
