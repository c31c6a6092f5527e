"""Drawing images from a trained model: the U-Net bound to a sampler, run on every device.

`make_generate_fn` builds a `jax.pmap`-ed function params, keys -> images that runs the
configured sampler (config.sampling) on every local device; `generate` splits a request for
N images over the devices and returns them as uint8 numpy arrays.
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ddpm import image_grid, samplers
from ddpm.schedules import Schedule


def make_denoise_fn(model: nn.Module, params):
  """f(x_t, t) -> model output, with dropout off."""
  return lambda x, t: model.apply({"params": params}, x, t, train=False)


def sampler_name(sampling_config) -> str:
  """E.g. "ddim50_eta0", "ddpm1000", "dpm_solver_pp_2m20_quadratic": method, steps, eta (DDIM),
  variance (DDPM, when not beta_tilde) and spacing (when not uniform)."""
  s = sampling_config
  name = f"{s.method}{s.num_steps}"
  if s.method == "ddim":
    name += f"_eta{s.eta:g}"
  if s.method == "ddpm" and s.variance != "beta_tilde":
    name += f"_{s.variance}"
  if s.spacing != "uniform":
    name += f"_{s.spacing}"
  return name


def sampler_kwargs(sampling_config, diffusion_config) -> dict:
  s = sampling_config
  return dict(num_steps=s.num_steps, eta=s.eta, variance=s.variance, spacing=s.spacing,
              clip_x0=s.clip_x0, prediction_type=diffusion_config.prediction_type)


def make_generate_fn(model: nn.Module, schedule: Schedule, sampling_config, diffusion_config,
                     per_device: int, image_shape, devices=None) -> callable:
  """pmap-ed (params [D, ...], keys [D, per_device, 2]) -> images in [-1, 1], [D, per_device, ...]."""
  method = sampling_config.method
  kwargs = sampler_kwargs(sampling_config, diffusion_config)

  def generate_one(params, keys):
    out = samplers.sample(method, make_denoise_fn(model, params), schedule, keys,
                          (per_device,) + tuple(image_shape), **kwargs)
    return out.samples

  # Params must be replicated on mesh axis "batch" (see train.AXIS).
  return jax.pmap(generate_one, axis_name="batch", devices=devices)


def generate(generate_fn, replicated_params, key: jax.Array, num: int, per_device: int) -> np.ndarray:
  """Draws `num` images as uint8 [num, H, W, C] with a `make_generate_fn` function.

  Image i is drawn from the key fold_in(key, i) alone, so the images depend only on `key`
  (not on the number of devices or the batch size), up to floating-point differences.
  """
  n_dev = jax.tree_util.tree_leaves(replicated_params)[0].shape[0]
  per_round = per_device * n_dev
  rounds = -(-num // per_round)
  out = []
  t0 = time.time()
  for i in range(rounds):
    ids = jnp.arange(i * per_round, (i + 1) * per_round)
    keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(ids).reshape((n_dev, per_device, -1))
    x = generate_fn(replicated_params, keys)
    out.append(np.asarray(jax.device_get(x)).reshape((-1,) + x.shape[2:]))
    if rounds > 1:
      done, elapsed = (i + 1) * per_round, time.time() - t0
      logging.info("sampled %d/%d images, %.2f images/s, ETA %.0f s", min(done, num), num,
                   done / elapsed, (rounds - i - 1) * elapsed / (i + 1))
  return image_grid.to_uint8(np.concatenate(out)[:num])
