"""The tiny config's model, optimizer and initial state, built once per test process."""

import functools

import jax

from configs import tiny
from ddpm import checkpointing, train


@functools.lru_cache(maxsize=None)
def tiny_state():
  """(config, model, tx, lr_fn, state, checkpoint meta) of configs/tiny.py, seed 0."""
  c = tiny.get_config()
  model = train.create_model(c)
  tx, lr_fn = train.create_optimizer(c)
  state = train.create_train_state(jax.random.PRNGKey(0), c, model, tx)
  return c, model, tx, lr_fn, state, checkpointing.make_meta(state, c.model, train.image_shape(c))
