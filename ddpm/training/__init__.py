"""Training: the data-parallel step and what it updates.

  train_step      TrainState, the pmap-ed step (loss, pmean, optimizer, EMA, non-finite guard)
  optimizer       optax Adam/AdamW, warm-up and decay, clipping
  ema             the parameters' moving average
  finetune        training chosen parameters only, starting from another run's checkpoint
  classifier_fit  training the feature classifier of the metrics (run as a script:
                  `python -m ddpm.training.classifier_fit`, so not imported here)

The loop around the step (data, logs, checkpoints, grids) is the train job, `ddpm.jobs.train`.
"""

from ddpm.training import ema, finetune, optimizer, train_step
from ddpm.training.train_step import TrainState, initial_state, make_p_train_step

__all__ = ["ema", "finetune", "optimizer", "train_step", "TrainState",
           "initial_state", "make_p_train_step"]
