"""The optimizer of a run: optax Adam/AdamW with warm-up, constant or cosine learning rate,
gradient clipping, and (fine-tuning) updates for the trainable parameters only."""

from __future__ import annotations

import optax

from ddpm.training import finetune


def learning_rate_schedule(optim_config, num_train_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to the peak rate, then constant (DDPM) or cosine decay to 0."""
  c = optim_config
  warmup = max(int(c.warmup_steps), 0)
  if c.lr_schedule == "constant":
    after = optax.constant_schedule(c.learning_rate)
  else:  # "cosine"
    after = optax.cosine_decay_schedule(c.learning_rate, max(num_train_steps - warmup, 1))
  if warmup == 0:
    return after
  return optax.join_schedules(
      [optax.linear_schedule(0.0, c.learning_rate, warmup), after], [warmup])


def create_optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
  c = config.optim
  lr = learning_rate_schedule(c, config.training.num_train_steps)
  if c.optimizer == "adamw":
    opt = optax.adamw(lr, b1=c.beta1, b2=c.beta2, eps=c.eps, weight_decay=c.weight_decay)
  else:  # "adam"
    opt = optax.adam(lr, b1=c.beta1, b2=c.beta2, eps=c.eps)
  if c.grad_clip_norm > 0:
    opt = optax.chain(optax.clip_by_global_norm(c.grad_clip_norm), opt)
  # Fine-tuning: only the parameters matching config.training.trainable are trained (the
  # clipping norm is theirs alone); the rest get no update and no optimizer state.
  return finetune.partition_optimizer(opt, config.training.trainable), lr
