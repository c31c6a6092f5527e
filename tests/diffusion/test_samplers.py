"""Facts about the reverse-process samplers, checked with exact (oracle) denoisers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from ddpm.diffusion import forward, parameterization, samplers, schedules

S = schedules.make_schedule("linear", 1000)
SHAPE = (3, 4, 4, 1)
X0 = jax.random.uniform(jax.random.PRNGKey(42), SHAPE, minval=-1, maxval=1)


def oracle(kind):
  """The ideal denoiser when the data is the single point X0: it outputs the exact target."""
  def f(x, t):
    eps = parameterization.eps_from_x0(S, x, t, X0)
    return parameterization.training_target(S, kind, X0, t, eps)
  return f


@pytest.fixture(scope="module")
def ddim_fn():
  return jax.jit(lambda key, eta: samplers.ddim_sample(
      oracle("eps"), S, key, SHAPE, num_steps=10, eta=eta, clip_x0=False).samples)


@given(st.integers(0, 2**31 - 1), st.sampled_from([0.0, 0.5, 1.0]))
def test_ddim_with_the_true_denoiser_recovers_x0(ddim_fn, seed, eta):
  out = ddim_fn(jax.random.PRNGKey(seed), eta)
  np.testing.assert_allclose(out, X0, atol=1e-4)


@pytest.mark.parametrize("kind", parameterization.PREDICTION_TYPES)
@pytest.mark.parametrize("method,steps", [("ddpm", 1000), ("ddpm", 25), ("ddim", 7)])
def test_every_sampler_and_parameterization_recovers_x0(kind, method, steps):
  out = samplers.sample(method, oracle(kind), S, jax.random.PRNGKey(0), SHAPE, num_steps=steps,
                        clip_x0=True, prediction_type=kind)
  np.testing.assert_allclose(out.samples, X0, atol=2e-3)


@given(st.integers(0, 999), st.integers(0, 2**31 - 1))
def test_one_ddim_step_with_the_true_noise_recovers_x0(t, seed):
  eps = jax.random.normal(jax.random.PRNGKey(seed), SHAPE)
  tb = jnp.full((SHAPE[0],), t)
  xt = forward.q_sample(S, X0, tb, eps)
  x0_hat, eps_hat = parameterization.model_output_to_x0_eps(S, "eps", eps, xt, tb)
  x = samplers.ddim_step(S, x0_hat, eps_hat, t, -1, jax.random.PRNGKey(0), eta=0.0)
  tol = 1e-5 / max(float(S.sqrt_alpha_bars[t]), 1e-2)
  np.testing.assert_allclose(x, X0, atol=max(tol, 1e-5) * 10)


@given(st.integers(1, 999), st.integers(0, 2**31 - 1))
def test_ddim_with_eta_one_is_ddpm_with_beta_tilde(t, seed):
  """Song et al. 2021, Sec. 4.1: eta = 1 gives the DDPM posterior, mean and variance."""
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  xt = jax.random.normal(k1, SHAPE)
  x0_hat = jnp.clip(jax.random.normal(k2, SHAPE), -1, 1)
  tb = jnp.full((SHAPE[0],), t)
  eps_hat = parameterization.eps_from_x0(S, xt, tb, x0_hat)
  a = samplers.ddim_step(S, x0_hat, eps_hat, t, t - 1, k3, eta=1.0)
  b = samplers.ddpm_step(S, x0_hat, xt, t, t - 1, k3, "beta_tilde")
  np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


@given(st.integers(0, 999), st.integers(0, 2**31 - 1), st.sampled_from(samplers.VARIANCES))
def test_a_full_chain_ddpm_step_is_the_schedules_posterior(t, seed, variance):
  """Between adjacent steps x_{t-1} = mu_tilde(x0_hat, x_t) + sigma z with the schedule's own
  eq. 7 constants (float64-derived), not a float32 ratio of alpha_bars."""
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  xt = jax.random.normal(k1, SHAPE)
  x0_hat = jnp.clip(jax.random.normal(k2, SHAPE), -1, 1)
  x = samplers.ddpm_step(S, x0_hat, xt, t, t - 1, k3, variance)
  mean, var, _ = forward.q_posterior_mean_variance(S, x0_hat, xt, jnp.full((SHAPE[0],), t))
  var = var if variance == "beta_tilde" else S.betas[t]
  want = mean + (jnp.sqrt(var) if t > 0 else 0.0) * jax.random.normal(k3, SHAPE)
  np.testing.assert_allclose(x, want, rtol=1e-6, atol=1e-6)


def test_ddpm_step_noise_has_the_posterior_variance():
  t, n = 500, 100_000
  xt, x0 = jnp.zeros((n, 1)), jnp.zeros((n, 1))
  for variance, expected in (("beta_tilde", S.posterior_variance[t]), ("beta", S.betas[t])):
    x = samplers.ddpm_step(S, x0, xt, t, t - 1, jax.random.PRNGKey(1), variance)
    assert abs(float(jnp.var(x)) / float(expected) - 1) < 0.02


def test_samplers_are_deterministic_per_key_and_return_trajectories():
  f = lambda x, t: 0.1 * x  # Any smooth "model".
  run = lambda key, method: samplers.sample(method, f, S, key, SHAPE, num_steps=20, eta=1.0,
                                            return_trajectory=True)
  for method in samplers.SAMPLERS:
    a, b = run(jax.random.PRNGKey(0), method), run(jax.random.PRNGKey(0), method)
    c = run(jax.random.PRNGKey(1), method)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.allclose(a.samples, c.samples)
    assert a.samples.shape == SHAPE and np.all(np.isfinite(a.samples))
    assert a.trajectory.shape == (21,) + SHAPE
    np.testing.assert_array_equal(a.trajectory[-1], a.samples)
  det = [samplers.ddim_sample(f, S, jax.random.PRNGKey(k), SHAPE, num_steps=5, eta=0.0,
                              x_T=jnp.ones(SHAPE)).samples for k in (0, 1)]
  np.testing.assert_array_equal(det[0], det[1])  # eta = 0: no randomness after x_T.


def test_bad_sampler_arguments_raise():
  f = lambda x, t: x
  with pytest.raises(ValueError, match="sampler 'euler'"):
    samplers.sample("euler", f, S, jax.random.PRNGKey(0), SHAPE)
  with pytest.raises(ValueError, match="variance 'big'"):
    samplers.ddpm_sample(f, S, jax.random.PRNGKey(0), SHAPE, variance="big")
  with pytest.raises(ValueError, match="x_T shape"):
    samplers.ddim_sample(f, S, jax.random.PRNGKey(0), SHAPE, x_T=jnp.zeros((1, 2)))
  with pytest.raises(ValueError, match="num_steps=2000"):
    samplers.ddim_sample(f, S, jax.random.PRNGKey(0), SHAPE, num_steps=2000)


@pytest.mark.parametrize("method", samplers.SAMPLERS)
def test_with_a_key_per_example_samples_do_not_depend_on_the_batching(method):
  """Example i drawn with key i is the same alone, in a batch, or in any split of it."""
  f = lambda x, t: 0.3 * jnp.tanh(x) + 1e-4 * t[:, None, None, None]  # Acts per example.
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(7), i))(jnp.arange(3))
  whole = samplers.sample(method, f, S, keys, SHAPE, num_steps=15, eta=1.0).samples
  parts = [samplers.sample(method, f, S, keys[i:i + 1], (1,) + SHAPE[1:], num_steps=15,
                           eta=1.0).samples for i in range(3)]
  np.testing.assert_allclose(whole, jnp.concatenate(parts), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="2 per-example keys for a batch of 3"):
    samplers.sample(method, f, S, keys[:2], SHAPE, num_steps=15)


def _recording(calls):
  """A denoiser that records the time step of every call as it runs (inside lax.scan too)."""
  def f(x, t):
    jax.debug.callback(lambda tt: calls.append(int(tt[0])), t, ordered=True)
    return oracle("eps")(x, t)
  return f


@pytest.mark.parametrize("method", samplers.SAMPLERS)
@pytest.mark.parametrize("steps,spacing", [(1, "trailing"), (4, "trailing"), (6, "quadratic"),
                                           (5, "uniform")])
def test_evaluation_timesteps_are_the_steps_each_sampler_evaluates_the_network_at(
    method, steps, spacing):
  ts = schedules.sampling_timesteps(1000, steps, spacing)
  calls = []
  out = samplers.sample(method, _recording(calls), S, jax.random.PRNGKey(0), SHAPE,
                        num_steps=steps, spacing=spacing)
  jax.block_until_ready(out.samples)
  jax.effects_barrier()
  want = samplers.evaluation_timesteps(method, ts)
  assert calls == want.tolist()
  assert len(want) == (2 * steps - 1 if method == "heun" else steps)
