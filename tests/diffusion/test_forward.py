"""Mathematical facts about the forward process, the posterior and the parameterizations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from ddpm.diffusion import forward, parameterization, schedules

SCHED = {n: schedules.make_schedule(n, 1000) for n in schedules.SCHEDULES}
names = st.sampled_from(schedules.SCHEDULES)
steps = st.integers(0, 999)
seeds = st.integers(0, 2**31 - 1)


def _batch(seed, shape=(3, 4, 4, 2)):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  return jax.random.normal(k1, shape), jax.random.normal(k2, shape)


@given(names, steps, seeds)
def test_q_sample_without_noise_is_scaled_data(name, t, seed):
  s = SCHED[name]
  x0, _ = _batch(seed)
  tb = jnp.full((x0.shape[0],), t)
  xt = forward.q_sample(s, x0, tb, jnp.zeros_like(x0))
  np.testing.assert_allclose(xt, np.sqrt(float(s.alpha_bars[t])) * x0, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("t", [0, 100, 500, 999])
def test_q_sample_moments_match_closed_form(t):
  s = SCHED["linear"]
  n = 200_000
  x0 = jnp.full((n, 1), 0.7)
  noise = jax.random.normal(jax.random.PRNGKey(t), x0.shape)
  xt = np.asarray(forward.q_sample(s, x0, jnp.full((n,), t), noise))
  mean, var = forward.q_mean_variance(s, x0[:1], jnp.array([t]))
  # Standard errors: sqrt(var / n) for the mean, var * sqrt(2 / n) for the variance.
  v = float(var[0, 0])
  assert abs(xt.mean() - float(mean[0, 0])) < 5 * np.sqrt(v / n)
  assert abs(xt.var() - v) < 5 * v * np.sqrt(2 / n)


@given(names, st.integers(1, 999), st.floats(-3, 3), st.floats(-3, 3))
def test_posterior_is_bayes_rule_for_scalar_gaussians(name, t, x0, xt):
  """q(x_{t-1} | x_t, x0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x0): a product of two Gaussians."""
  s = SCHED[name]
  b = np.asarray(schedules.make_betas(name, 1000), np.float64)
  ab = np.cumprod(1 - b)
  # Prior N(sqrt(ab_{t-1}) x0, 1 - ab_{t-1}); likelihood of x_t: N(sqrt(a_t) x_{t-1}, b_t).
  prior_mean, prior_var = np.sqrt(ab[t - 1]) * x0, 1 - ab[t - 1]
  precision = 1 / prior_var + (1 - b[t]) / b[t]
  var = 1 / precision
  mean = var * (prior_mean / prior_var + np.sqrt(1 - b[t]) * xt / b[t])
  m, v, logv = forward.q_posterior_mean_variance(
      s, jnp.array([[x0]]), jnp.array([[xt]]), jnp.array([t]))
  np.testing.assert_allclose(float(v[0, 0]), var, rtol=2e-4)
  np.testing.assert_allclose(float(logv[0, 0]), np.log(var), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(float(m[0, 0]), mean, rtol=2e-4, atol=2e-5)


@given(names, seeds)
def test_posterior_at_first_step_is_the_data(name, seed):
  x0, xt = _batch(seed)
  m, v, _ = forward.q_posterior_mean_variance(SCHED[name], x0, xt, jnp.zeros(3, jnp.int32))
  np.testing.assert_allclose(m, x0, rtol=1e-6, atol=1e-6)
  assert float(jnp.max(v)) == 0.0


@given(names, st.integers(1, 999), st.integers(1, 999))
def test_pairwise_posterior_coefficients_match_the_schedule(name, t, gap):
  s = SCHED[name]
  # Consecutive steps: the schedule's own constants.
  c0, ct, var, beta = forward.posterior_coefficients(s.alpha_bars[t], s.alpha_bars[t - 1])
  np.testing.assert_allclose(c0, s.posterior_mean_coef_x0[t], rtol=2e-3, atol=1e-6)
  np.testing.assert_allclose(ct, s.posterior_mean_coef_xt[t], rtol=1e-3, atol=1e-6)
  np.testing.assert_allclose(var, s.posterior_variance[t], rtol=2e-3, atol=1e-7)
  # Any pair s < t: for the noiseless x_t = sqrt(ab_t) x0 the posterior mean must be the
  # noiseless x_s = sqrt(ab_s) x0 (both coefficients together carry x0 through).
  s_idx = max(t - gap, 0)
  c0, ct, var, _ = forward.posterior_coefficients(s.alpha_bars[t], s.alpha_bars[s_idx])
  x0 = 0.37
  mean = c0 * x0 + ct * jnp.sqrt(s.alpha_bars[t]) * x0
  np.testing.assert_allclose(mean, jnp.sqrt(s.alpha_bars[s_idx]) * x0, rtol=1e-3, atol=1e-5)
  assert float(var) >= 0


@given(names, steps, seeds)
def test_parameterizations_round_trip(name, t, seed):
  s = SCHED[name]
  x0, eps = _batch(seed)
  tb = jnp.full((3,), t)
  xt = forward.q_sample(s, x0, tb, eps)
  v = parameterization.v_from_x0_eps(s, x0, tb, eps)
  tol = dict(rtol=1e-3, atol=2e-3)
  np.testing.assert_allclose(parameterization.x0_from_v(s, xt, tb, v), x0, **tol)
  np.testing.assert_allclose(parameterization.eps_from_v(s, xt, tb, v), eps, **tol)
  if float(s.alpha_bars[t]) > 1e-2:  # x0 from eps divides by sqrt(alpha_bar).
    np.testing.assert_allclose(parameterization.x0_from_eps(s, xt, tb, eps), x0, **tol)
  if float(s.alpha_bars[t]) < 0.99:  # eps from x0 divides by sqrt(1 - alpha_bar).
    np.testing.assert_allclose(parameterization.eps_from_x0(s, xt, tb, x0), eps, **tol)
  for kind in parameterization.PREDICTION_TYPES:
    target = parameterization.training_target(s, kind, x0, tb, eps)
    x0_hat, eps_hat = parameterization.model_output_to_x0_eps(s, kind, target, xt, tb)
    if 1e-2 < float(s.alpha_bars[t]) < 0.99:
      np.testing.assert_allclose(x0_hat, x0, **tol)
      np.testing.assert_allclose(eps_hat, eps, **tol)


@given(seeds, st.integers(1, 4))
def test_timestep_and_noise_draws_do_not_depend_on_the_split(seed, parts):
  key = jax.random.PRNGKey(seed)
  x0 = jnp.zeros((8, 2, 2, 1))
  t_all, n_all = forward.sample_timesteps_and_noise(key, x0, 1000)
  assert t_all.dtype == jnp.int32 and int(t_all.min()) >= 0 and int(t_all.max()) < 1000
  size = 8 // parts if 8 % parts == 0 else 8
  for start in range(0, 8, size):
    ids = jnp.arange(start, start + size)
    t, n = forward.sample_timesteps_and_noise(key, x0[:size], 1000, ids)
    np.testing.assert_array_equal(t, t_all[start:start + size])
    np.testing.assert_array_equal(n, n_all[start:start + size])


def test_bad_shapes_and_types_raise():
  s = SCHED["linear"]
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="t must have shape"):
    forward.q_sample(s, x, jnp.zeros((3,), jnp.int32), x)
  with pytest.raises(TypeError, match="integer"):
    forward.q_sample(s, x, jnp.zeros((2,)), x)
  with pytest.raises(ValueError, match="noise shape"):
    forward.q_sample(s, x, jnp.zeros((2,), jnp.int32), jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match="prediction_type 'score'"):
    parameterization.training_target(s, "score", x, jnp.zeros((2,), jnp.int32), x)


@given(names, steps, seeds, st.sampled_from(parameterization.PREDICTION_TYPES))
def test_clipped_x0_stays_in_range_and_consistent_with_xt(name, t, seed, kind):
  """With clip_x0, x0_hat is in [-1, 1] and (x0_hat, eps_hat) still reproduce x_t (eq. 4)."""
  s = SCHED[name]
  xt, out = _batch(seed)
  tb = jnp.full((3,), t)
  x0, eps = parameterization.model_output_to_x0_eps(s, kind, 3.0 * out, xt, tb, clip_x0=True)
  assert float(jnp.max(jnp.abs(x0))) <= 1.0
  if float(s.alpha_bars[t]) < 0.99:  # eps from x0 divides by sqrt(1 - alpha_bar).
    np.testing.assert_allclose(forward.q_sample(s, x0, tb, eps), xt, rtol=1e-3, atol=1e-3)


def test_timesteps_drawn_from_a_distribution_follow_it():
  """t ~ timestep_probs: over 40,000 draws each step's frequency is within 5 standard errors of
  its probability, steps of probability 0 never come, and an ill-shaped distribution raises."""
  probs = np.zeros(20, np.float32)
  probs[[0, 3, 7, 19]] = [0.1, 0.2, 0.3, 0.4]
  x0 = jnp.zeros((40_000, 1, 1, 1))
  t, _ = forward.sample_timesteps_and_noise(jax.random.PRNGKey(1), x0, 20,
                                            timestep_probs=jnp.asarray(probs))
  counts = np.bincount(np.asarray(t), minlength=20) / len(x0)
  np.testing.assert_allclose(counts, probs, atol=5 * np.sqrt(0.25 / len(x0)))
  assert t.dtype == jnp.int32 and set(np.unique(np.asarray(t))) == {0, 3, 7, 19}
  with pytest.raises(ValueError, match="timestep_probs shape"):
    forward.sample_timesteps_and_noise(jax.random.PRNGKey(1), x0[:4], 20,
                                       timestep_probs=jnp.ones(10) / 10)
