"""Anomaly scores (ddpm/evaluation/anomaly_scores.py) and AUROC (ddpm/evaluation/metrics.py)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.stats import norm

from ddpm.diffusion import parameterization, schedules
from ddpm.evaluation import anomaly_scores, metrics

S = schedules.make_schedule("linear", 1000)
X0 = jax.random.uniform(jax.random.PRNGKey(42), (4, 4, 1), minval=-1, maxval=1)

scores = st.lists(st.integers(-5, 5).map(float), min_size=1, max_size=12)


@given(scores, scores)
def test_auroc_is_the_pairwise_win_rate_with_ties_counting_half(a, b):
  pairs = list(itertools.product(a, b))
  want = sum((y > x) + 0.5 * (y == x) for x, y in pairs) / len(pairs)
  assert metrics.auroc(a, b) == pytest.approx(want, abs=1e-12)
  assert metrics.auroc(a, b) + metrics.auroc(b, a) == pytest.approx(1.0, abs=1e-12)
  # A strictly increasing transform of the scores changes nothing.
  assert metrics.auroc(np.exp(a), np.exp(b)) == pytest.approx(want, abs=1e-12)


@given(scores, scores)
def test_auroc_is_the_area_under_the_roc_curve(a, b):
  fpr, tpr = metrics.roc_curve(a, b)
  assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
  assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
  assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.auroc(a, b), abs=1e-12)


def test_auroc_of_two_gaussians_is_phi_of_d_over_sqrt2():
  rng = np.random.default_rng(0)
  d, n = 1.0, 20000
  got = metrics.auroc(rng.normal(0, 1, n), rng.normal(d, 1, n))
  assert got == pytest.approx(norm.cdf(d / np.sqrt(2)), abs=0.01)


def test_auroc_rejects_empty_and_nonfinite_scores():
  with pytest.raises(ValueError, match="0 normal"):
    metrics.auroc([], [1.0])
  with pytest.raises(ValueError, match="finite"):
    metrics.auroc([np.nan], [1.0])


@given(st.integers(0, 2**31 - 1), st.lists(st.integers(1, 990), min_size=1, max_size=4))
def test_denoising_error_of_the_single_point_model_is_snr_times_the_distance(seed, ts):
  """For data that is the single image X0, eps_hat(x_t) = (x_t - sqrt(ab) X0) / sqrt(1 - ab), so
  an image x_0 has error exactly ab / (1 - ab) ||x_0 - X0||^2 / dim at every t and every draw:
  zero for X0 itself, growing with the distance from it."""
  def oracle(x, t):
    return parameterization.eps_from_x0(S, x, t, jnp.broadcast_to(X0, x.shape))
  x = jnp.stack([X0, X0 + 0.1, -X0])
  keys = jax.random.split(jax.random.PRNGKey(seed), 3)
  e = anomaly_scores.denoising_errors(oracle, S, x, keys, ts, num_draws=2)
  ab = np.asarray(S.alpha_bars, np.float64)[ts]
  dist = np.mean(np.square(np.asarray(x - X0, np.float64)), axis=(1, 2, 3))
  want = dist[:, None] * (ab / (1 - ab))[None, :]
  np.testing.assert_allclose(e, want, rtol=2e-3, atol=1e-5)


def test_denoising_errors_of_an_image_do_not_depend_on_its_batch():
  net = lambda x, t: jnp.tanh(x) * (t[:, None, None, None] / 1000.0)
  x = jax.random.normal(jax.random.PRNGKey(1), (5, 4, 4, 1))
  keys = jax.random.split(jax.random.PRNGKey(2), 5)
  all_ = anomaly_scores.denoising_errors(net, S, x, keys, (10, 500))
  part = anomaly_scores.denoising_errors(net, S, x[2:4], keys[2:4], (10, 500))
  np.testing.assert_allclose(part, all_[2:4], rtol=1e-6)
  assert all_.shape == (5, 2)
