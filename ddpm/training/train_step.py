"""One data-parallel training step (pure, pmap-ed) and the state it updates.

`TrainState` holds the step, parameters, their EMA, the optimizer state and the base key;
`train_step` draws (t, eps) per example from fold_in(step key, global example index) and
minimizes the diffusion loss (`ddpm.diffusion.losses`), averaging gradients over all devices of
all processes with lax.pmean, so one device and four give the same parameters for the same
global batch. A non-finite loss or gradient leaves the state unchanged. The loop around it
(data, logging, checkpoints, sample grids) is `ddpm.jobs.train.Trainer`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from ddpm.diffusion import losses
from ddpm.diffusion.schedules import Schedule
from ddpm.models import build
from ddpm.models.unet import UNet
from ddpm.runtime import checkpointing, replicas
from ddpm.training import ema, optimizer


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: Any
  ema_params: Any
  opt_state: Any
  rng: jax.Array  # Base key; the key of step s is fold_in(rng, s).


def create_train_state(rng: jax.Array, config, model: UNet, tx, params=None) -> TrainState:
  """Step 0 with fresh parameters from `rng` (or the given ones), EMA = parameters."""
  init_rng, state_rng = jax.random.split(rng)
  if params is None:
    params = jax.jit(lambda k: build.init_params(model, k, build.image_shape(config)))(init_rng)
  return TrainState(step=jnp.asarray(0, jnp.int32), params=params, ema_params=params,
                    opt_state=tx.init(params), rng=state_rng)


def initial_state(config):
  """(model, tx, lr_fn, fresh TrainState from config.seed, checkpoint meta) for `config`."""
  model = build.create_model(config)
  tx, lr_fn = optimizer.create_optimizer(config)
  state = create_train_state(jax.random.PRNGKey(config.seed), config, model, tx)
  meta = checkpointing.make_meta(state.params, config.model, build.image_shape(config))
  return model, tx, lr_fn, state, meta


def drop_labels(key: jax.Array, labels: jnp.ndarray, example_ids: jnp.ndarray, p_uncond: float,
                null_label: int) -> jnp.ndarray:
  """Label dropout of classifier-free guidance (Ho & Salimans 2022, Alg. 1): each label is
  replaced by `null_label` with probability `p_uncond`, decided by fold_in(key, example id)
  alone (so it does not depend on how the batch is split over devices)."""
  if p_uncond <= 0:
    return labels
  drop = jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(key, i), p_uncond))(
      example_ids)
  return jnp.where(drop, null_label, labels)


def train_step(state: TrainState, batch: dict, *, model: UNet, schedule: Schedule,
               tx: optax.GradientTransformation, lr_fn: optax.Schedule, config,
               axis_name: str = "batch"):
  """One data-parallel step (call under pmap with `axis_name`).

  Each example draws (t, eps) and, for a class-conditional model, its label dropout from
  fold_in(step key, its global index), and dropout keys are per device, so the result does not
  depend on how a global batch is split over devices (with dropout 0). Gradients and metrics
  are averaged over devices with lax.pmean.
  """
  x0 = batch["image"]
  b = x0.shape[0]
  step_key = jax.random.fold_in(state.rng, state.step)
  device = jax.lax.axis_index(axis_name)
  example_ids = device * b + jnp.arange(b)
  dropout_key = jax.random.fold_in(jax.random.fold_in(step_key, 1 << 30), device)
  d = config.diffusion
  labels = None
  if model.num_classes:
    labels = drop_labels(jax.random.fold_in(step_key, (1 << 30) + 1), batch["label"],
                         example_ids, config.training.label_dropout, model.num_classes)

  def loss_fn(params):
    denoise = lambda x, t: model.apply({"params": params}, x, t, labels, train=True,
                                       rngs={"dropout": dropout_key})
    return losses.sampled_diffusion_loss(
        denoise, schedule, x0, step_key, example_ids, prediction_type=d.prediction_type,
        weighting=d.loss_weighting, min_snr_gamma=d.min_snr_gamma,
        timestep_sampling=d.timestep_sampling)

  (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = jax.lax.pmean(grads, axis_name)
  loss = jax.lax.pmean(loss, axis_name)
  grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  decay = ema.ema_decay_at(state.step, config.optim.ema_decay, config.optim.ema_warmup)
  ema_params = ema.ema_update(state.ema_params, params, decay)
  # A non-finite loss or gradient (the same on every device after pmean) leaves the
  # parameters, EMA and optimizer state as they were; the host applies nan_policy.
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)
  metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": lr_fn(state.step),
             "nonfinite": 1.0 - finite.astype(jnp.float32)}
  new_state = state.replace(step=state.step + 1, params=keep(params, state.params),
                            ema_params=keep(ema_params, state.ema_params),
                            opt_state=keep(opt_state, state.opt_state))
  return new_state, metrics


def make_p_train_step(model, schedule, tx, lr_fn, config, devices=None):
  """`train_step` pmap-ed over `devices` (default: all local devices), donating the state."""
  step = functools.partial(train_step, model=model, schedule=schedule, tx=tx, lr_fn=lr_fn,
                           config=config)
  return jax.pmap(step, axis_name=replicas.AXIS, donate_argnums=(0,), devices=devices)
