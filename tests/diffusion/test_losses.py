"""Facts about the training objective."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from ddpm.diffusion import forward, losses, parameterization, schedules

S = schedules.make_schedule("linear", 1000)
seeds = st.integers(0, 2**31 - 1)
kinds = st.sampled_from(parameterization.PREDICTION_TYPES)


def _data(seed, shape=(4, 6, 6, 1)):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  return (jax.random.uniform(k1, shape, minval=-1, maxval=1), jax.random.normal(k2, shape),
          jax.random.randint(k3, (shape[0],), 0, 1000))


@given(seeds, st.floats(1e-3, 10.0))
def test_loss_is_zero_exactly_at_the_target_and_positive_elsewhere(seed, scale):
  _, target, _ = _data(seed)
  assert float(losses.denoising_loss(target, target)) == 0.0
  bump = jnp.zeros_like(target).at[1, 2, 3, 0].set(scale)
  loss = float(losses.denoising_loss(target + bump, target))
  np.testing.assert_allclose(loss, scale**2 / target.size, rtol=1e-4)


@given(seeds, kinds)
def test_oracle_model_has_zero_loss(seed, kind):
  """A model that knows x0 outputs the exact target, so the loss vanishes (up to rounding)."""
  x0, eps, t = _data(seed)
  xt = forward.q_sample(S, x0, t, eps)
  oracle = lambda x, tt: parameterization.training_target(S, kind, x0, tt, eps)
  loss, aux = losses.diffusion_loss(oracle, S, x0, t, eps, prediction_type=kind)
  assert float(loss) == 0.0 and aux["per_example_mse"].shape == (4,)
  del xt


@given(seeds, kinds)
def test_min_snr_weight_is_the_same_x0_error_in_every_parameterization(seed, kind):
  """w(t) ||target error||^2 = min(SNR, gamma) ||x0 error||^2 whatever is predicted."""
  x0, eps, t = _data(seed)
  t = jnp.clip(t, 50, 950)  # Away from the ends, where eps <-> x0 divides by ~0.
  xt = forward.q_sample(S, x0, t, eps)
  x0_hat = x0 + 0.1 * jax.random.normal(jax.random.PRNGKey(seed + 1), x0.shape)
  eps_hat = parameterization.eps_from_x0(S, xt, t, x0_hat)
  out = parameterization.training_target(S, kind, x0_hat, t, eps_hat)
  target = parameterization.training_target(S, kind, x0, t, eps)
  w = losses.loss_weight(S, t, kind, "min_snr", 5.0)
  lhs = w * losses.mean_flat(jnp.square(out - target))
  rhs = jnp.minimum(forward.snr(S, t), 5.0) * losses.mean_flat(jnp.square(x0_hat - x0))
  np.testing.assert_allclose(lhs, rhs, rtol=2e-3)


def test_uniform_weighting_is_one_and_bad_weighting_raises():
  t = jnp.arange(10)
  np.testing.assert_array_equal(losses.loss_weight(S, t, "eps"), 1.0)
  with pytest.raises(ValueError, match="weighting 'p2'"):
    losses.loss_weight(S, t, "eps", "p2")
  with pytest.raises(ValueError, match="shape"):
    losses.denoising_loss(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


def test_sampled_loss_uses_the_per_example_draws():
  x0, _, _ = _data(0)
  key = jax.random.PRNGKey(5)
  t, eps = forward.sample_timesteps_and_noise(key, x0, 1000)
  f = lambda x, tt: jnp.sin(x) * tt[:, None, None, None] / 1000.0
  a, _ = losses.sampled_diffusion_loss(f, S, x0, key)
  b, _ = losses.diffusion_loss(f, S, x0, t, eps)
  assert float(a) == float(b)


weightings = st.sampled_from(losses.WEIGHTINGS)


@given(seeds, kinds, weightings, st.floats(0.5, 20.0))
def test_importance_weights_estimate_the_uniform_objective_exactly(seed, kind, weighting, gamma):
  """sum_t p(t) [w(t) / (T p(t))] l(t) = mean_t w(t) l(t) for any per-t loss l: drawing t from
  the importance distribution changes the estimator, not the objective; and p is w normalised."""
  t_all = jnp.arange(S.num_timesteps)
  w = losses.loss_weight(S, t_all, kind, weighting, gamma)
  p = losses.timestep_distribution(S, kind, weighting, gamma)
  assert p.shape == (1000,) and bool(jnp.all(p > 0))
  np.testing.assert_allclose(float(jnp.sum(p)), 1.0, rtol=1e-5)
  np.testing.assert_allclose(p * jnp.sum(w), w, rtol=1e-5)
  per_t_loss = jax.random.uniform(jax.random.PRNGKey(seed), (1000,), minval=0.0, maxval=3.0)
  importance = w / (S.num_timesteps * p)
  np.testing.assert_allclose(float(jnp.sum(p * importance * per_t_loss)),
                             float(jnp.mean(w * per_t_loss)), rtol=1e-4)
  # With p proportional to w every example carries the same weight, the mean of w.
  np.testing.assert_allclose(importance, jnp.mean(w), rtol=1e-4)


def test_importance_sampled_loss_uses_its_draws_and_weights():
  """The importance-sampled loss is diffusion_loss at its own draws of t ~ p with the weights
  w(t) / (T p(t)); under L_simple (uniform p) those weights are 1."""
  x0, _, _ = _data(0)
  key = jax.random.PRNGKey(5)
  f = lambda x, tt: jnp.sin(x) * tt[:, None, None, None] / 1000.0
  kw = dict(prediction_type="v", weighting="min_snr", min_snr_gamma=5.0)
  p = losses.timestep_distribution(S, "v", "min_snr", 5.0)
  t, eps = forward.sample_timesteps_and_noise(key, x0, 1000, timestep_probs=p)
  a, _ = losses.sampled_diffusion_loss(f, S, x0, key, timestep_sampling="importance", **kw)
  weights = losses.loss_weight(S, t, "v", "min_snr", 5.0) / (1000 * p[t])
  xt = forward.q_sample(S, x0, t, eps)
  b = losses.denoising_loss(f(xt, t), parameterization.training_target(S, "v", x0, t, eps), weights)
  np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
  np.testing.assert_allclose(losses.timestep_distribution(S, "eps"), 1e-3, rtol=1e-5)
  with pytest.raises(ValueError, match="timestep sampling 'lognormal'"):
    losses.sampled_diffusion_loss(f, S, x0, key, timestep_sampling="lognormal")
  with pytest.raises(ValueError, match="timestep_probs shape"):
    losses.diffusion_loss(f, S, x0, t, eps, timestep_probs=jnp.ones((3,)) / 3)
