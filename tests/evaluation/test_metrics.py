"""Property tests of FID, Inception Score, precision/recall and MSE/PSNR
(ddpm/evaluation/metrics.py)."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from ddpm.data import image_arrays
from ddpm.evaluation import metrics

seeds = st.integers(0, 2**31 - 1)


def gaussian_set(seed, n=400, d=8, shift=0.0, scale=1.0):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(d, d)) / np.sqrt(d)
  return (rng.normal(size=(n, d)) @ a) * scale + shift


@given(seeds)
def test_fid_of_a_set_with_itself_is_zero(seed):
  x = gaussian_set(seed)
  assert metrics.fid(x, x) == pytest.approx(0.0, abs=1e-8)


@given(seeds, seeds)
def test_fid_is_symmetric_and_nonnegative(s1, s2):
  x, y = gaussian_set(s1), gaussian_set(s2, shift=0.3)
  assert metrics.fid(x, y) == pytest.approx(metrics.fid(y, x), rel=1e-7, abs=1e-9)
  assert metrics.fid(x, y) >= 0


@given(seeds, st.floats(-3, 3))
def test_fid_of_a_shifted_copy_is_the_squared_shift(seed, c):
  """Same covariance, means apart by c in every coordinate: FID = ||mu1 - mu2||^2 = d c^2."""
  x = gaussian_set(seed)
  assert metrics.fid(x, x + c) == pytest.approx(x.shape[1] * c**2, rel=1e-6, abs=1e-8)


@given(seeds)
def test_fid_grows_with_the_shift_and_with_shrinking(seed):
  x = gaussian_set(seed)
  shifts = [metrics.fid(x, x + c) for c in (0.1, 0.3, 1.0)]
  shrinks = [metrics.fid(x, x.mean(0) + (x - x.mean(0)) * s) for s in (0.9, 0.6, 0.3)]
  assert shifts == sorted(shifts) and shrinks == sorted(shrinks) and shrinks[0] > 0


def test_fid_matches_the_closed_form_for_diagonal_gaussians():
  """For diagonal covariances Tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (s1 - s2)^2 (std devs)."""
  s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([0.5, 1.0, 3.0])
  mu1, mu2 = np.zeros(3), np.array([1.0, 0.0, -2.0])
  got = metrics.frechet_distance(metrics.GaussianStats(mu1, np.diag(s1**2), 10),
                                 metrics.GaussianStats(mu2, np.diag(s2**2), 10))
  assert got == pytest.approx(np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2), rel=1e-12)


def test_fid_needs_more_samples_than_the_feature_dimension():
  with pytest.raises(ValueError, match="at least 129 samples") as e:
    metrics.fid(np.zeros((100, 128)), np.zeros((300, 128)))
  assert "\n" not in str(e.value)


def test_fid_rejects_nan_features():
  x = gaussian_set(0)
  x[3, 2] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    metrics.fid(x, gaussian_set(1))


@given(st.integers(1, 50), st.integers(20, 200))
def test_inception_score_of_a_constant_prediction_is_one(k, n):
  p = np.random.default_rng(k).dirichlet(np.ones(k + 1))
  mean, std = metrics.inception_score(np.tile(p, (n, 1)), splits=5)
  assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-12)


@given(st.integers(2, 50), st.integers(1, 10))
def test_inception_score_of_uniform_confident_predictions_is_the_class_count(k, reps):
  probs = np.tile(np.eye(k), (reps * 10, 1))  # Every class equally often.
  mean, std = metrics.inception_score(probs, splits=1)
  assert mean == pytest.approx(k, rel=1e-9) and std == 0.0


@given(st.integers(2, 50), st.integers(1, 3))
def test_inception_score_does_not_depend_on_a_class_sorted_order(k, reps):
  # Class blocks, as a conditional model draws them: unshuffled splits would each hold one
  # class and score ~1. Shuffled, a split of 100 * reps * k rows has ~10 * reps of each class
  # and exp(entropy of its class frequencies) is within a few percent of k.
  probs = np.repeat(np.eye(k), reps * 100, axis=0)
  mean, _ = metrics.inception_score(probs, splits=10)
  assert 0.9 * k < mean <= k + 1e-9


def test_inception_score_rejects_non_probabilities():
  with pytest.raises(ValueError, match="probabilities"):
    metrics.inception_score(np.full((20, 3), 0.5), splits=2)


@given(seeds)
def test_precision_and_recall_of_identical_sets_are_one(seed):
  x = gaussian_set(seed, n=200)
  assert metrics.precision_recall(x, x.copy()) == (1.0, 1.0)


@given(seeds)
def test_precision_drops_for_far_away_samples_and_recall_for_collapsed_ones(seed):
  x, y = gaussian_set(seed, n=300), gaussian_set(seed + 1, n=300)
  p_far, _ = metrics.precision_recall(x, y + 100.0)
  _, r_collapsed = metrics.precision_recall(x, np.repeat(y[:1], 300, 0) + 1e-3 * y)
  assert p_far == 0.0 and r_collapsed < 0.1


def test_knn_radii_match_brute_force():
  x = gaussian_set(3, n=50)
  d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
  want = np.sort(d, 1)[:, 3] ** 2
  np.testing.assert_allclose(metrics.knn_radii(x, 3), want, rtol=1e-9, atol=1e-9)


@given(seeds, st.floats(0.01, 4.0))
def test_mse_and_psnr_agree_with_numpy(seed, data_range):
  rng = np.random.default_rng(seed)
  x, y = rng.uniform(size=(3, 5, 4, 2)), rng.uniform(size=(3, 5, 4, 2))
  want_mse = np.array([np.mean((a - b) ** 2) for a, b in zip(x, y)])
  np.testing.assert_allclose(metrics.mse(x, y), want_mse, rtol=1e-12)
  np.testing.assert_allclose(metrics.psnr(x, y, data_range),
                             20 * np.log10(data_range) - 10 * np.log10(want_mse), rtol=1e-10)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 8, 8)), "must be \\[N, H, W, C\\]"),
    (np.zeros((2, 8, 8, 1), np.int32), "dtype int32"),
    (np.full((2, 8, 8, 1), 3.0, np.float32), "range over"),
    (np.full((2, 8, 8, 1), np.nan, np.float32), "NaN"),
    (np.zeros((2, 8, 9, 1), np.uint8), "expects \\(8, 8, 1\\)"),
])
def test_check_images_one_line_errors(bad, match):
  with pytest.raises(ValueError, match=match) as e:
    image_arrays.check_images(bad, (8, 8, 1))
  assert "\n" not in str(e.value)


def test_check_images_maps_model_range_to_uint8_exactly():
  u = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
  np.testing.assert_array_equal(image_arrays.check_images(u.astype(np.float32) / 127.5 - 1.0), u)
