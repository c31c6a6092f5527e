"""Drawing images from a trained model: the U-Net bound to a sampler, run on every device.

`make_generate_fn` builds a `jax.pmap`-ed function params, keys, labels -> images that runs
the configured sampler (config.sampling) on every local device; `generate` splits a request for
N images over the devices and returns them as uint8 numpy arrays. A class-conditional model
samples the requested labels with classifier-free guidance of weight
config.sampling.guidance_weight (`ddpm.diffusion.guidance`, through `ddpm.pipelines.denoiser`).
With config.sampling.autoguidance_weight != 0 the network is guided by a weaker checkpoint
of itself (autoguidance, Karras et al. 2024): `draw` then takes that checkpoint's parameters
as `guide_params`, and every network evaluation of the sampler evaluates both.
"""

from __future__ import annotations

import hashlib
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import jax_utils

from ddpm.data import image_arrays, image_shards
from ddpm.diffusion import guidance, samplers, schedules
from ddpm.diffusion.schedules import Schedule
from ddpm.models import build
from ddpm.pipelines import denoiser
from ddpm.runtime import replicas


def sampler_name(sampling_config) -> str:
  """E.g. "ddim50_eta0", "ddpm1000", "dpm_solver_pp_2m20_quadratic_w2_class3",
  "dpm_solver_pp_2m10_trailing_ag1.5_guide1000": method, steps, eta (DDIM), variance (DDPM,
  when not beta_tilde), spacing (when not uniform), guidance weight (when not 0), class (when
  one class is drawn), and autoguidance's weight, guide step ("raw": its raw parameters) and
  time steps (when limited)."""
  s = sampling_config
  name = f"{s.method}{s.num_steps}"
  if s.method == "ddim":
    name += f"_eta{s.eta:g}"
  if s.method == "ddpm" and s.variance != "beta_tilde":
    name += f"_{s.variance}"
  if s.spacing != "uniform":
    name += f"_{s.spacing}"
  if s.get("guidance_weight", 0.0) != 0:
    name += f"_w{s.guidance_weight:g}"
  if s.get("class_label", -1) >= 0:
    name += f"_class{s.class_label}"
  if denoiser.autoguided(s):
    steps = "+".join(map(str, denoiser.guide_steps(s)))
    name += f"_ag{s.autoguidance_weight:g}_guide{steps}{'' if s.guide_use_ema else 'raw'}"
    lo, hi = int(s.get("guide_t_min", 0)), int(s.get("guide_t_max", -1))
    if (lo, hi) != (0, -1):
      name += f"_t{lo}-{hi if hi >= 0 else 'T'}"
  return name


def network_evaluations(sampling_config, num_timesteps: int) -> int:
  """Network evaluations per image of config.sampling's sampler: one per sampler evaluation
  (`samplers.evaluation_timesteps`; classifier-free guidance runs one call on a doubled batch),
  plus one of the guide at each evaluation inside autoguidance's time steps."""
  s = sampling_config
  ts = samplers.evaluation_timesteps(
      s.method, schedules.sampling_timesteps(num_timesteps, s.num_steps, s.spacing))
  if not denoiser.autoguided(s):
    return len(ts)
  lo, hi = denoiser.guide_t_range(s, num_timesteps) or (0, num_timesteps - 1)
  return len(ts) + int(np.sum((ts >= lo) & (ts <= hi)))


def sampler_kwargs(sampling_config, diffusion_config) -> dict:
  s = sampling_config
  return dict(num_steps=s.num_steps, eta=s.eta, variance=s.variance, spacing=s.spacing,
              clip_x0=s.clip_x0, prediction_type=diffusion_config.prediction_type)


def make_generate_fn(model: nn.Module, schedule: Schedule, sampling_config, diffusion_config,
                     per_device: int, image_shape, devices=None) -> callable:
  """pmap-ed (params [D, ...], keys [D, per_device, 2], labels [D, per_device] int32) -> images
  in [-1, 1], [D, per_device, ...]. An unconditional model ignores the labels. With
  autoguidance (`denoiser.autoguided(sampling_config)`), params is the pair (model's, guide's)."""
  method = sampling_config.method
  kwargs = sampler_kwargs(sampling_config, diffusion_config)
  conditional = getattr(model, "num_classes", 0) > 0

  def generate_one(params, keys, labels):
    guide = None
    if denoiser.autoguided(sampling_config):
      if not isinstance(params, tuple) or len(params) != 2:
        raise ValueError("with config.sampling.autoguidance_weight != 0 the parameters are the "
                         "pair (model's, guide's); got one set (see `generation.draw`).")
      params, guide = params
    denoise = denoiser.sampling_denoise_fn(model, params, sampling_config, schedule.num_timesteps,
                                           labels if conditional else None, guide)
    out = samplers.sample(method, denoise, schedule, keys,
                          (per_device,) + tuple(image_shape), **kwargs)
    return out.samples

  # Params must be replicated on mesh axis replicas.AXIS.
  return jax.pmap(generate_one, axis_name=replicas.AXIS, devices=devices)


def generate(generate_fn, replicated_params, key: jax.Array, num: int, per_device: int,
             labels=None, shard_dir: str | None = None,
             shard_identity: dict | None = None) -> np.ndarray:
  """Draws `num` images as uint8 [num, H, W, C] with a `make_generate_fn` function.

  Image i is drawn from the key fold_in(key, i) and label `labels[i]` (int [num]; None: 0,
  for an unconditional model) alone, so the images depend only on `key` and the labels
  (not on the number of devices or the batch size), up to floating-point differences.

  With `shard_dir`, each round of per_device x devices images is written there as it is drawn
  (`ddpm.data.image_shards`); a rerun with the same arguments and `shard_identity` (what else
  the images depend on: sampler, checkpoint) draws only the rounds not on disk yet and returns
  the same images, bit for bit. The caller removes the shards once its result is written.
  """
  n_dev = jax.tree_util.tree_leaves(replicated_params)[0].shape[0]
  per_round = per_device * n_dev
  rounds = -(-num // per_round)
  labels = np.zeros((num,), np.int32) if labels is None else np.asarray(labels, np.int32)
  if labels.shape != (num,):
    raise ValueError(f"labels have shape {labels.shape}; expected ({num},).")
  labels = np.pad(labels, (0, rounds * per_round - num), mode="edge")
  shards, done = None, {}
  if shard_dir:
    identity = dict(shard_identity or {}, num=num, per_device=per_device, devices=n_dev,
                    key=np.asarray(jax.random.key_data(key) if jnp.issubdtype(
                        key.dtype, jax.dtypes.prng_key) else key).tolist(),
                    labels_sha1=hashlib.sha1(labels.tobytes()).hexdigest())
    shards = image_shards.ImageShards(shard_dir, identity)
    done = {i: x for i, x in shards.load().items() if i < rounds}
    if done:
      logging.info("Resuming from %s: %d of %d rounds (%d images) already drawn.", shard_dir,
                   len(done), rounds, min(len(done) * per_round, num))
  out = []
  t0, drawn = time.time(), 0
  for i in range(rounds):
    if i in done:
      out.append(done[i])
      continue
    ids = jnp.arange(i * per_round, (i + 1) * per_round)
    keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(ids).reshape((n_dev, per_device, -1))
    y = labels[i * per_round:(i + 1) * per_round].reshape((n_dev, per_device))
    x = generate_fn(replicated_params, keys, y)
    images = image_arrays.to_uint8(np.asarray(jax.device_get(x)).reshape((-1,) + x.shape[2:]))
    out.append(images)
    if shards is not None:
      shards.save(i, images)
    drawn += 1
    if rounds > 1:
      done_now, elapsed = (i + 1) * per_round, time.time() - t0
      left = rounds - i - 1
      logging.info("sampled %d/%d images, %.2f images/s, ETA %.0f s", min(done_now, num), num,
                   drawn * per_round / elapsed, left * elapsed / drawn)
  return np.concatenate(out)[:num]


def sample_labels(config, num: int) -> np.ndarray | None:
  """The labels of `num` images drawn with config.sampling.class_label (None: unconditional)."""
  if config.model.num_classes == 0:
    return None
  return guidance.class_labels(num, config.model.num_classes, config.sampling.class_label)


def grid_columns(config, num: int) -> int | None:
  """Columns of a sample grid: one row per class when a conditional model draws balanced
  blocks of all classes (class_label = -1) and the class count divides `num`; else None."""
  k = config.model.num_classes
  if k and config.sampling.class_label == -1 and num % k == 0:
    return num // k
  return None


def draw(config, params, num: int, labels=None, shard_dir: str | None = None,
         shard_identity: dict | None = None, guide_params=None) -> tuple[np.ndarray, float]:
  """`num` uint8 images from unreplicated `params` with config.sampling (seed, method, batch
  size, guidance weight) on all local devices, and the seconds it took (compilation included).
  With config.sampling.autoguidance_weight != 0, `guide_params` (unreplicated, the same
  network's) are the guide's.

  `labels` (int [num]) defaults to `sample_labels(config, num)`. With `shard_dir`, the rounds
  are kept there as they are drawn and a rerun resumes (`generate`); `shard_identity` names
  what else the images depend on (the checkpoint), config.sampling and the model config are
  added here.
  """
  s = config.sampling
  per_device = -(-min(s.batch_size, num) // jax.local_device_count())
  schedule = schedules.schedule_from_config(config.diffusion)
  fn = make_generate_fn(build.create_model(config), schedule, s, config.diffusion, per_device,
                        build.image_shape(config))
  t0 = time.time()
  if labels is None:
    labels = sample_labels(config, num)
  identity = None
  if shard_dir:
    identity = dict(shard_identity or {}, sampling=s.to_dict(), model=config.model.to_dict(),
                    diffusion=config.diffusion.to_dict())
  if denoiser.autoguided(s):
    denoiser.check_guide(s, guide_params)
    params = (params, guide_params)
  images = generate(fn, jax_utils.replicate(params, axis_name=replicas.AXIS),
                    jax.random.PRNGKey(s.seed), num, per_device, labels, shard_dir, identity)
  return images, time.time() - t0
