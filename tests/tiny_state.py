"""The tiny config's model, optimizer and initial state, built once per test process."""

import functools

from configs import tiny
from ddpm.training import train_step


@functools.lru_cache(maxsize=None)
def tiny_state():
  """(config, model, tx, lr_fn, state, checkpoint meta) of configs/tiny.py, seed 0."""
  c = tiny.get_config()
  return (c, *train_step.initial_state(c))


@functools.lru_cache(maxsize=None)
def tiny_conditional_state():
  """The same for configs/tiny.py made class-conditional on MNIST's 10 labels."""
  c = tiny.get_config()
  c.model.num_classes = 10
  return (c, *train_step.initial_state(c))
