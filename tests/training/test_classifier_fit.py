"""The classifier's training loop (ddpm.training.classifier_fit.fit) on data it must separate."""

import numpy as np
import pytest

from ddpm.evaluation import features
from ddpm.training import classifier_fit


def _bands(n, seed):
  """Class k: a bright horizontal band at rows 2k..2k+2 over noise."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 10, n)
  x = rng.integers(0, 60, (n, 28, 28, 1)).astype(np.uint8)
  for i, k in enumerate(y):
    x[i, 2 * k + 2:2 * k + 5] = 255
  return x, y


def test_fit_learns_a_separable_task_and_reports_each_epoch():
  x, y = _bands(400, 0)
  xt, yt = _bands(200, 1)
  evaluate = lambda p: features.accuracy(features.classifier_extractor("mnist", p), xt, yt)
  params, history = classifier_fit.fit(x, y, epochs=1, batch_size=50, min_steps=40,
                                       evaluate=evaluate, log=None)
  assert len(history) == 5  # 8 steps per epoch: 5 epochs reach 40 steps.
  assert history[-1]["test_accuracy"] >= 0.95
  assert history[-1]["loss"] < history[0]["loss"]


def test_fit_rejects_bad_labels():
  x, _ = _bands(10, 0)
  with pytest.raises(ValueError, match="labels must be"):
    classifier_fit.fit(x, np.full(10, 10), log=None)
