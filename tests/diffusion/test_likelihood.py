"""Property tests of the variational bound and of denoising
(ddpm/diffusion/likelihood.py, ddpm/diffusion/denoising.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ddpm.data import image_arrays
from ddpm.diffusion import denoising, forward, likelihood, parameterization, schedules

seeds = st.integers(0, 2**31 - 1)
SCHEDULE = schedules.make_schedule("linear", 50, scale_to_1000=True)
T = SCHEDULE.num_timesteps


def grid_images(seed, shape=(3, 4, 4, 1)):
  """Images on the 8-bit grid in [-1, 1], including both edge levels."""
  u = np.random.default_rng(seed).integers(0, 256, size=shape).astype(np.uint8)
  u.flat[0], u.flat[1] = 0, 255
  return image_arrays.uint8_to_model_range(u)


@given(seeds)
def test_normal_kl_is_nonnegative_and_zero_only_for_equal_gaussians(seed):
  rng = np.random.default_rng(seed)
  m1, m2, l1, l2 = (jnp.asarray(rng.normal(size=64)) for _ in range(4))
  assert np.all(np.asarray(likelihood.normal_kl(m1, l1, m2, l2)) >= -1e-6)
  np.testing.assert_allclose(likelihood.normal_kl(m1, l1, m1, l1), 0.0, atol=1e-6)


@given(st.floats(-1.5, 1.5), st.floats(-7.0, 1.0))
def test_discretized_decoder_probabilities_over_the_256_bins_sum_to_one(mean, log_scale):
  levels = jnp.arange(256, dtype=jnp.float32) / 127.5 - 1.0
  logp = likelihood.discretized_gaussian_log_likelihood(levels, jnp.full(256, mean),
                                                        jnp.full(256, log_scale))
  assert np.all(np.isfinite(np.asarray(logp)))
  assert float(jnp.sum(jnp.exp(logp))) == pytest.approx(1.0, abs=2e-5)


def test_discretized_decoder_is_accurate_far_in_the_tails():
  """A bin 40 standard deviations away has log probability about -x^2/2, not -inf."""
  x = jnp.asarray([0.0], jnp.float32)
  logp = likelihood.discretized_gaussian_log_likelihood(x, jnp.asarray([0.5]), jnp.log(jnp.asarray([0.0125])))
  assert np.isfinite(float(logp[0])) and -900 < float(logp[0]) < -700


@given(seeds)
def test_every_term_of_the_bound_is_nonnegative(seed):
  key = jax.random.PRNGKey(seed)
  x0 = grid_images(seed)
  t = jax.random.randint(key, (x0.shape[0],), 0, T)
  xt = forward.q_sample(SCHEDULE, x0, t, jax.random.normal(jax.random.fold_in(key, 1), x0.shape))
  out = jax.random.normal(jax.random.fold_in(key, 2), x0.shape)  # Any model output.
  for variance in ("beta_tilde", "beta"):
    terms = likelihood.vlb_term_bpd(SCHEDULE, out, x0, xt, t, variance=variance)
    assert np.all(np.asarray(terms) >= -1e-5), terms
  assert np.all(np.asarray(likelihood.prior_bpd(SCHEDULE, x0)) >= 0)


def oracle(x0):
  """The exact eps predictor when the data is the single point x0: eps = (x_t - sqrt(ab) x0) / sqrt(1 - ab)."""
  return lambda xt, t: parameterization.eps_from_x0(SCHEDULE, xt, t, x0)


@settings(max_examples=8)
@given(seeds)
def test_kl_terms_vanish_for_the_exact_model_with_beta_tilde(seed):
  """With x0_hat = x0 the model's step is q(x_{t-1} | x_t, x0) itself: every KL is 0, and the
  bound is the prior term plus the decoder's NLL."""
  x0 = grid_images(seed)
  est = likelihood.bpd_estimate(oracle(x0), SCHEDULE, x0, jax.random.PRNGKey(seed), num_strata=T)
  terms = np.asarray(est.terms)
  np.testing.assert_array_equal(np.asarray(est.timesteps), np.tile(np.arange(T), (3, 1)))
  np.testing.assert_allclose(terms[:, 1:], 0.0, atol=2e-4)
  assert np.all(terms[:, 0] > 0)
  np.testing.assert_allclose(est.total, est.prior + terms.sum(1), rtol=1e-6)


@functools.lru_cache(maxsize=None)
def _estimator(num_strata):
  """The bound of a model that predicts a constant x0 = 0.3: every term is then a deterministic
  function of t (x0_hat does not depend on x_t), so the estimator's only randomness is t."""
  model = lambda xt, t: jnp.full_like(xt, 0.3)
  return jax.jit(jax.vmap(lambda x0, key: likelihood.bpd_estimate(
      model, SCHEDULE, x0, key, num_strata=num_strata, prediction_type="x0", variance="beta"),
      in_axes=(None, 0)))


def test_stratified_estimate_is_unbiased():
  """Each sampled term is the exact term at its t, t is uniform within its stratum, and the
  average over draws converges to the full sum over all T steps."""
  x0 = grid_images(0, (2, 4, 4, 1))
  exact = _estimator(T)(x0, jax.random.split(jax.random.PRNGKey(0), 1))
  exact_terms, exact_total = np.asarray(exact.terms[0]), np.asarray(exact.total[0])
  est = _estimator(5)(x0, jax.random.split(jax.random.PRNGKey(1), 2000))
  ts, terms = np.asarray(est.timesteps), np.asarray(est.terms)
  edges = likelihood.strata(T, 5)
  assert np.all((ts >= edges[:-1]) & (ts < edges[1:]))
  np.testing.assert_allclose(terms, np.take_along_axis(np.broadcast_to(exact_terms, (2000, 2, T)),
                                                       ts, axis=2), rtol=1e-5, atol=1e-6)
  widest = int(np.argmax(np.diff(edges)))
  counts = np.bincount(ts[:, :, widest].ravel() - edges[widest], minlength=np.diff(edges).max())
  assert counts.min() > 0.7 * counts.mean()  # Uniform within the stratum.
  totals = np.asarray(est.total)
  se = totals.std(0) / np.sqrt(len(totals))
  assert np.all(np.abs(totals.mean(0) - exact_total) < 4 * se), (totals.mean(0), exact_total, se)


@given(st.integers(1, 1000), st.data())
def test_strata_cover_every_step_once(T_, data):
  k = data.draw(st.integers(1, T_))
  e = likelihood.strata(T_, k)
  assert len(e) == k + 1 and e[0] == 0 and e[-1] == T_ and np.all(np.diff(e) > 0)
  with pytest.raises(ValueError, match="num_strata=0"):
    likelihood.strata(10, 0)


# ----------------------------------------------------------------- denoising

@given(st.integers(0, T - 1))
def test_timestep_for_sigma_inverts_the_noise_to_signal_ratio(t):
  sigma = denoising.noise_to_signal(SCHEDULE)[t]
  assert denoising.timestep_for_sigma(SCHEDULE, sigma) == t


def test_timestep_for_sigma_rejects_bad_levels():
  for bad in (0.0, -1.0, float("nan"), 1e6):
    with pytest.raises(ValueError, match="sigma"):
      denoising.timestep_for_sigma(SCHEDULE, bad)


@settings(max_examples=8)  # Each t compiles its own reverse loop.
@given(seeds, st.integers(1, T - 1))
def test_denoising_with_the_true_noise_recovers_the_clean_image(seed, t):
  """y = x0 + sigma_t n scaled by sqrt(ab_t) is x_t with noise n: an eps model that returns n
  gives x0 back in one step, and DDIM (eta 0) from t also lands on x0."""
  key = jax.random.PRNGKey(seed)
  x0 = jax.random.uniform(key, (2, 4, 4, 1), minval=-0.9, maxval=0.9)
  n = jax.random.normal(jax.random.fold_in(key, 1), x0.shape)
  y = x0 + denoising.noise_to_signal(SCHEDULE)[t].astype(np.float32) * n
  true_noise = lambda xt, tt: n
  # float32: x_t / sqrt(alpha_bar_t) amplifies rounding by up to 1 / sqrt(alpha_bar_{T-1}) ~ 6.
  np.testing.assert_allclose(denoising.denoise_one_step(true_noise, SCHEDULE, y, t), x0, atol=5e-4)
  for steps in (None, 3):
    out = denoising.denoise_reverse(oracle(x0), SCHEDULE, y, t, key, method="ddim", num_steps=steps)
    np.testing.assert_allclose(out, x0, atol=5e-4)


@given(seeds, st.floats(0.0, 1.5), st.integers(0, T - 1))
def test_sdedit_start_has_the_forward_marginal_whatever_noise_the_input_had(seed, s, t):
  """y = x0 + s n, then x_t = sqrt(ab) y + sqrt(1 - ab (1 + s^2)) z has mean sqrt(ab) x0 and
  variance 1 - ab: q(x_t | x0) of Ho et al. eq. 4, for any t at or above y's own level."""
  t_min = denoising.timestep_for_sigma(SCHEDULE, s) if s > 0 else 0
  if t < t_min:
    with pytest.raises(ValueError, match=f"allowed: t >= {t_min}"):
      denoising.perturb_to_xt(SCHEDULE, jnp.zeros((1,)), t, s, jax.random.PRNGKey(0))
    return
  sigma_t = denoising.noise_to_signal(SCHEDULE)[t]
  if t == t_min and s > sigma_t:
    return  # The nearest step: its small remainder of excess noise is left in (documented).
  key = jax.random.PRNGKey(seed)
  n = 40000
  x0 = 0.3
  y = x0 + s * jax.random.normal(key, (n,))
  xt = np.asarray(denoising.perturb_to_xt(SCHEDULE, y, t, s, jax.random.fold_in(key, 1)), np.float64)
  ab = float(SCHEDULE.alpha_bars[t])
  var = 1.0 - ab
  assert abs(xt.mean() - np.sqrt(ab) * x0) < 5 * np.sqrt(var / n)
  assert abs(xt.var() - var) < 5 * var * np.sqrt(2.0 / n)
