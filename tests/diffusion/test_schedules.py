"""Properties of the beta schedules and the constants derived from them."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from ddpm.diffusion import schedules

names = st.sampled_from(schedules.SCHEDULES)
lengths = st.integers(min_value=2, max_value=2000)


@given(names, lengths)
def test_alpha_bar_strictly_decreasing_in_unit_interval(name, T):
  s = schedules.make_schedule(name, T)
  ab = np.asarray(s.alpha_bars, np.float64)
  betas = np.asarray(schedules.make_betas(name, T))
  assert np.all((betas > 0) & (betas < 1))
  assert np.all((ab > 0) & (ab <= 1))
  # Strictly decreasing in float64 (the float32 copy can tie where beta_t < 2^-24).
  assert np.all(np.diff(np.cumprod(1 - betas)) < 0)
  assert np.all(np.diff(ab) <= 0)


@given(names, lengths)
def test_derived_constants_are_consistent(name, T):
  s = schedules.make_schedule(name, T)
  np.testing.assert_allclose(s.alphas, 1 - s.betas, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(s.alpha_bars_prev[1:], s.alpha_bars[:-1], rtol=1e-6)
  assert float(s.alpha_bars_prev[0]) == 1.0
  np.testing.assert_allclose(np.square(s.sqrt_alpha_bars) + np.square(s.sqrt_one_minus_alpha_bars),
                             1.0, rtol=1e-5)
  # beta_tilde_t <= beta_t, and = 0 exactly at t = 0 (q(x_{-1} | x_0, x_0) is a point mass).
  assert float(s.posterior_variance[0]) == 0.0
  assert np.all(np.asarray(s.posterior_variance) <= np.asarray(s.betas) * (1 + 1e-6))
  assert np.all(np.isfinite(s.posterior_log_variance_clipped))
  np.testing.assert_allclose(s.posterior_log_variance_clipped[1:], np.log(s.posterior_variance[1:]),
                             rtol=1e-4, atol=1e-5)


def test_linear_schedule_is_the_papers():
  s = schedules.make_schedule("linear", 1000)
  np.testing.assert_allclose([s.betas[0], s.betas[-1]], [1e-4, 0.02], rtol=1e-6)
  # x_T is pure noise up to alpha_bar_T ~ 4e-5 (Ho et al. 2020, Sec. 4).
  assert 1e-5 < float(s.alpha_bars[-1]) < 1e-4


def test_cosine_schedule_follows_its_closed_form():
  T = 1000
  s = schedules.make_schedule("cosine", T)
  f = lambda t: np.cos((t / T + 0.008) / 1.008 * np.pi / 2) ** 2
  t = np.arange(1, T)
  np.testing.assert_allclose(s.alpha_bars[:-1][: T - 100], (f(t) / f(0))[: T - 100], rtol=1e-5)


@given(st.integers(21, 2000))
def test_scaled_linear_schedule_ends_in_noise_for_any_T(T):
  # Betas scaled by 1000/T keep sum(beta) ~ 10, so alpha_bar_T ~ e^-10 whatever T is.
  s = schedules.make_schedule("linear", T, scale_to_1000=True)
  assert float(s.alpha_bars[-1]) < 1e-3


@given(st.integers(1, 1000), st.data(), st.sampled_from(["uniform", "trailing", "quadratic"]))
def test_sampling_timesteps_increase_within_range(T, data, spacing):
  S = data.draw(st.integers(1, T))
  ts = schedules.sampling_timesteps(T, S, spacing)
  assert ts.shape == (S,)
  assert ts[0] >= 0 and ts[-1] <= T - 1
  assert np.all(np.diff(ts) > 0)
  if spacing in ("trailing", "quadratic"):
    assert ts[-1] == T - 1  # Sampling starts where x_T ~ N(0, I) is the marginal.
  if spacing == "quadratic" and S > 1:
    # Within rounding of (T - 1) (i / (S - 1))^2, or i where that would repeat a step.
    i = np.arange(S)
    assert np.all(np.abs(ts - np.maximum((T - 1) * (i / (S - 1)) ** 2, i)) <= 0.5)
  if S == T:
    np.testing.assert_array_equal(ts, np.arange(T))


@pytest.mark.parametrize("bad", [dict(name="nope", num_timesteps=10), dict(name="linear", num_timesteps=0),
                                 dict(name="linear", num_timesteps=10, beta_start=0.5, beta_end=0.1)])
def test_bad_schedules_raise_one_line_errors(bad):
  with pytest.raises(ValueError) as e:
    schedules.make_betas(**bad)
  assert "\n" not in str(e.value)


def test_bad_sampling_timesteps():
  with pytest.raises(ValueError, match="num_steps=11"):
    schedules.sampling_timesteps(10, 11)
  with pytest.raises(ValueError, match="spacing 'nope'"):
    schedules.sampling_timesteps(10, 5, "nope")


def test_sigmoid_schedule_follows_its_closed_form():
  T = 1000
  s = schedules.make_schedule("sigmoid", T)
  sig = lambda z: 1 / (1 + np.exp(-z))
  u = np.arange(1, T) / T
  expected = (sig(3.0) - sig(u * 6.0 - 3.0)) / (sig(3.0) - sig(-3.0))
  np.testing.assert_allclose(s.alpha_bars[:-1][: T - 100], expected[: T - 100], rtol=1e-4)


@given(names, st.integers(2, 300), st.data())
def test_alpha_bar_at_is_the_product_of_alphas_with_one_for_the_data(name, T, data):
  """alpha_bar_t = prod_{s<=t} (1 - beta_s) for t >= 0, and alpha_bar_{-1} = 1 (x_{-1} = x_0)."""
  s = schedules.make_schedule(name, T)
  t = data.draw(st.integers(-1, T - 1))
  want = 1.0 if t < 0 else float(np.prod(1.0 - np.asarray(s.betas, np.float64)[:t + 1]))
  got = float(schedules.alpha_bar_at(s, jnp.asarray(t)))
  assert got == pytest.approx(want, rel=1e-4, abs=1e-7)
  if t >= 0:
    assert got == float(s.alpha_bars[t])
