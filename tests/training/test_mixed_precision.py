"""model.dtype=bfloat16: the U-Net computes in bfloat16, everything else stays float32.

Stated tolerance: over 30 training steps of the tiny config on real MNIST from the same
parameters and batches, the bfloat16 run's loss stays within 2% of the float32 run's at every
step and its mean over the last 10 steps within 1% (measured on this CPU: at most 0.35% and
0.03%).
"""

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import jax_utils

from configs import tiny
from ddpm.data import input_pipeline
from ddpm.diffusion import schedules
from ddpm.models import build
from ddpm.pipelines import generation
from ddpm.runtime import replicas
from ddpm.training import optimizer, train_step
from tiny_state import tiny_state

HAVE_MNIST = (pathlib.Path(os.environ.get("TFDS_DATA_DIR", "/nonexistent")) / "mnist").is_dir()
STEPS = 30
STEP_RTOL, MEAN_RTOL = 0.02, 0.01


def _config(dtype):
  c = tiny.get_config()
  c.model.dtype = dtype
  return c


def _train(config, params, batches):
  """Losses and final state of `len(batches)` steps on one device from `params`."""
  model = build.create_model(config)
  tx, lr_fn = optimizer.create_optimizer(config)
  state = train_step.create_train_state(jax.random.PRNGKey(config.seed), config, model, tx, params)
  devices = jax.local_devices()[:1]
  step = train_step.make_p_train_step(model, schedules.schedule_from_config(config.diffusion), tx,
                                      lr_fn, config, devices=devices)
  rs = jax_utils.replicate(state, devices=devices, axis_name=replicas.AXIS)
  losses = []
  for b in batches:
    rs, m = step(rs, jax.tree_util.tree_map(lambda x: x[None], b))
    losses.append(float(m["loss"][0]))
  return np.array(losses), replicas.unreplicate(rs)


def test_bfloat16_computes_in_bfloat16_and_returns_float32():
  c = _config("bfloat16")
  model = build.create_model(c)
  params = jax.eval_shape(lambda: build.init_params(model, jax.random.PRNGKey(0),
                                                    build.image_shape(c)))
  assert {p.dtype for p in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float32)}
  x, t = jnp.zeros((2, 16, 16, 1)), jnp.array([0, 50])
  apply = lambda p: model.apply({"params": p}, x, t)
  jaxpr = str(jax.make_jaxpr(apply)(params))
  convs = [line for line in jaxpr.splitlines() if "conv_general_dilated" in line]
  assert convs and all("bf16" in line for line in convs)  # Every convolution in bfloat16.
  assert jax.eval_shape(apply, params).dtype == jnp.float32
  # The float32 model has no bfloat16 at all, so the check above can fail.
  c32 = _config("float32")
  assert "bf16" not in str(jax.make_jaxpr(
      lambda p: build.create_model(c32).apply({"params": p}, x, t))(params))
  sched = schedules.schedule_from_config(c.diffusion)
  assert {a.dtype for a in jax.tree_util.tree_leaves(sched)} == {jnp.dtype(jnp.float32)}


@pytest.mark.skipif(not HAVE_MNIST, reason="needs the prepared MNIST in TFDS_DATA_DIR")
def test_bfloat16_training_tracks_float32_and_samples_stay_finite():
  c32, c16 = _config("float32"), _config("bfloat16")
  data = input_pipeline.load_examples(c32, "train", STEPS * c32.training.batch_size)
  batches = [{k: v[i * 32:(i + 1) * 32] for k, v in data.items() if k in ("image", "label")}
             for i in range(STEPS)]
  params = tiny_state()[4].params  # tiny.py's initial parameters (float32).
  l32, s32 = _train(c32, params, batches)
  l16, s16 = _train(c16, params, batches)
  assert l32[-10:].mean() < 0.8 * l32[:3].mean()  # It trained, so tracking is not vacuous.
  assert not np.array_equal(l16, l32)  # And bfloat16 really ran.
  np.testing.assert_allclose(l16, l32, rtol=STEP_RTOL)
  np.testing.assert_allclose(l16[-10:].mean(), l32[-10:].mean(), rtol=MEAN_RTOL)
  # Parameters, EMA and optimizer state stay float32.
  assert {np.asarray(a).dtype for a in jax.tree_util.tree_leaves(
      (s16.params, s16.ema_params, s16.opt_state)) if np.issubdtype(np.asarray(a).dtype,
                                                                      np.floating)} == {np.dtype(np.float32)}
  # DDIM samples of the bfloat16 model (sampler and schedule in float32): float32, finite.
  fn = generation.make_generate_fn(build.create_model(c16), schedules.schedule_from_config(c16.diffusion),
                                   c16.sampling, c16.diffusion, 8, build.image_shape(c16),
                                   devices=jax.local_devices()[:1])
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(1), i))(jnp.arange(8))[None]
  x = np.asarray(fn(jax_utils.replicate(s16.ema_params, jax.local_devices()[:1],
                                        axis_name=replicas.AXIS), keys, np.zeros((1, 8), np.int32)))
  assert x.shape == (1, 8, 16, 16, 1) and x.dtype == np.float32
  assert np.all(np.isfinite(x)) and np.all(np.abs(x) <= 1) and x.std() > 0.1
