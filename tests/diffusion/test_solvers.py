"""Facts about the ODE samplers (DPM-Solver++(2M), Heun) and every sampler on Gaussian data.

For data x0 ~ N(mu, s^2) (each pixel independent), x_t ~ N(sqrt(ab) mu, ab s^2 + 1 - ab)
(ab = alpha_bar_t) and the MMSE noise predictor is closed-form,

    eps*(x_t, t) = E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab),

so a sampler driven by eps* can be checked against the data distribution with no training.
The numbers quoted below were measured in float32 on CPU with the T = 1000 linear schedule
(the convergence-order test uses a schedule linear in log-SNR instead).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from configs import default as default_config
from ddpm.diffusion import forward, parameterization, samplers, schedules
from ddpm.pipelines import generation

S = schedules.make_schedule("linear", 1000)
AB = np.asarray(S.alpha_bars, np.float64)
ODE_SAMPLERS = ("ddim", "dpm_solver_pp_2m", "heun")
MUS = st.floats(-0.5, 0.5)
SDS = st.floats(0.1, 0.6)


def eps_star(mu, s):
  """The exact (MMSE) noise predictor for x0 ~ N(mu, s^2) (module docstring)."""
  def f(x, t):
    ab = forward.extract(S.alpha_bars, t, x.shape)
    return jnp.sqrt(1.0 - ab) * (x - jnp.sqrt(ab) * mu) / (ab * s**2 + 1.0 - ab)
  return f


def standard_normal_grid(n: int) -> jnp.ndarray:
  """n fixed N(0, 1) draws shifted and scaled to sample mean 0 and sample variance 1."""
  z = jax.random.normal(jax.random.PRNGKey(0), (n, 1))
  return (z - z.mean()) / z.std()


Z = standard_normal_grid(2000)


@functools.lru_cache(maxsize=None)
def exact_start_errors(method: str, steps: int, spacing: str = "quadratic"):
  """jit (mu, s) -> (|mean - mu|, |var / s^2 - 1|) of the samples, deterministically.

  x_T is Z mapped onto the exact marginal of x at the first time step, so the samples have
  mean mu and variance s^2 exactly if the sampler solves the probability-flow ODE exactly:
  what is left is the sampler's own error.
  """
  t_max = int(schedules.sampling_timesteps(1000, steps, spacing)[-1])

  def run(mu, s):
    ab = S.alpha_bars[t_max]
    x_T = jnp.sqrt(ab) * mu + jnp.sqrt(ab * s**2 + 1.0 - ab) * Z
    x = samplers.sample(method, eps_star(mu, s), S, jax.random.PRNGKey(1), Z.shape,
                        num_steps=steps, spacing=spacing, eta=0.0, clip_x0=False,
                        x_T=x_T).samples
    return jnp.abs(x.mean() - mu), jnp.abs(x.var() / s**2 - 1.0)
  return jax.jit(run)


@settings(max_examples=6)
@given(MUS, SDS)
def test_ode_samplers_solve_the_gaussian_flow_with_error_shrinking_in_steps(mu, s):
  """Relative variance error |var / s^2 - 1| with x_T from the exact marginal, quadratic
  spacing from t = 999 (measured; mu = 0.5, s = 0.1 / 0.3 and mu = 0, s = 0.6):

      steps:        5                  10                 50
      ddim      0.77 / 0.59 / 0.55   0.44 / 0.34 / 0.30   0.11   / 0.074  / 0.064
      dpm++2m   0.77 / 0.51 / 0.37   0.25 / 0.050 / 0.089 0.0061 / 0.0079 / 0.0041
      heun      1.7  / 1.4  / 2.2    0.30 / 0.15 / 0.16   0.00064 / 0.0034 / 0.0038
      (ddim at 99 steps, Heun-50's NFE: 0.062 / 0.038 / 0.032)

  The mean is exact (error < 1e-6) for every sampler: x0_hat at the mean of x_t is mu, so
  the mean path is followed exactly whatever the steps. DPM-Solver++(2M) beats DDIM at equal
  steps (and NFE); Heun beats DDIM at equal steps from 10 steps on and at equal NFE at 50
  steps (99 NFE, 20x smaller error), but at 5 steps (9 NFE) it is worse than DDIM even at
  equal steps: its corrector then evaluates the model far from the data manifold.
  Uniform spacing (the config default) is worse for the ODE solvers: its last step into
  t = 0 is a large jump in lambda (10 steps: 1.1 -> 4.6; 50 steps: 2.5 -> 4.6), e.g.
  DPM-Solver++(2M) at 50 steps: 0.31 / 0.22 / 0.083.
  """
  err = {(m, n): [float(e) for e in exact_start_errors(m, n)(mu, s)]
         for m in ODE_SAMPLERS for n in (5, 10, 50)}
  ddim_99 = float(exact_start_errors("ddim", 99)(mu, s)[1])
  for m in ODE_SAMPLERS:
    for n in (5, 10, 50):
      assert err[m, n][0] < 1e-5, (m, n, err[m, n])
    var_err = [err[m, n][1] for n in (5, 10, 50)]
    assert var_err[0] > var_err[1] > var_err[2], (m, var_err)
  for n in (5, 10, 50):
    assert err["dpm_solver_pp_2m", n][1] < err["ddim", n][1], (n, err)
  for n in (10, 50):
    assert err["heun", n][1] < err["ddim", n][1], (n, err)
  assert err["heun", 50][1] < ddim_99 / 5
  assert err["dpm_solver_pp_2m", 50][1] < 0.01 and err["heun", 50][1] < 0.01
  assert err["ddim", 50][1] < 0.12


def log_snr_linear_schedule(num_timesteps: int = 1281) -> schedules.Schedule:
  """A schedule with lambda_t = log(alpha_t / sigma_t) linear in t, from 5 down to -5
  (alpha_bar_t = sigmoid(2 lambda_t)), so evenly spaced time steps are evenly spaced in
  lambda, the step size DPM-Solver's analysis uses (Lu et al. 2022, Sec. 3)."""
  lam = 5.0 - 10.0 * np.arange(num_timesteps) / (num_timesteps - 1)
  ab = 1.0 / (1.0 + np.exp(-2.0 * lam))
  return schedules.schedule_from_betas(1.0 - ab / np.append(1.0, ab[:-1]))


S_LAMBDA = log_snr_linear_schedule()


@functools.lru_cache(maxsize=None)
def error_at_last_time_step(method: str, every: int):
  """jit (mu, s) -> signed variance error of x at the smallest time step t_0 = 0, sampling
  S_LAMBDA's time steps 0, every, 2 every, ..., 1280. t_0 is where the ODE solution ends,
  before the step to data (first-order x0_hat for every solver, with its own error)."""
  ts = np.arange(0, S_LAMBDA.num_timesteps, every)

  def run(mu, s):
    ab, ab_0 = S_LAMBDA.alpha_bars[ts[-1]], S_LAMBDA.alpha_bars[ts[0]]
    x_T = jnp.sqrt(ab) * mu + jnp.sqrt(ab * s**2 + 1.0 - ab) * Z

    def eps(x, t):
      a = forward.extract(S_LAMBDA.alpha_bars, t, x.shape)
      return jnp.sqrt(1.0 - a) * (x - jnp.sqrt(a) * mu) / (a * s**2 + 1.0 - a)
    traj = samplers.sample(method, eps, S_LAMBDA, jax.random.PRNGKey(1), Z.shape,
                           timesteps=ts, clip_x0=False, x_T=x_T,
                           return_trajectory=True).trajectory
    return traj[-2].var() / (ab_0 * s**2 + 1.0 - ab_0) - 1.0
  return jax.jit(run)


@settings(max_examples=3)
@given(MUS, SDS)
def test_convergence_order_on_a_log_snr_uniform_grid(mu, s):
  """Doubling the steps (41 -> 81 -> 161, evenly spaced in lambda) halves DDIM's error
  (first order) and quarters those of DPM-Solver++(2M) and Heun (second order). Measured
  |variance error| at t_0, nearly the same for every mu, s in range:
      ddim 0.12 / 0.061 / 0.031;  dpm++2m 0.0075 / 0.0019 / 0.00048;
      heun 0.017 / 0.0040 / 0.00099 (ratios 1.94, 1.97; 3.90-3.94, 3.96-3.99; 4.14, 4.06).
  (On the linear schedule the grid cannot be even in lambda near t = 0, where one time step
  moves lambda by up to 0.4, and the multistep DPM-Solver++ shows ratios down to 1.1 there.)
  """
  for method, lo, hi in (("ddim", 1.8, 2.2), ("dpm_solver_pp_2m", 3.5, 4.5), ("heun", 3.5, 4.5)):
    e = [abs(float(error_at_last_time_step(method, every)(mu, s))) for every in (32, 16, 8)]
    for coarse, fine in zip(e, e[1:]):
      assert lo < coarse / fine < hi, (method, e)


@functools.lru_cache(maxsize=None)
def random_errors(method: str, steps: int, n: int = 40_000):
  """jit (mu, s) -> (mean - mu, var / s^2 - 1) of n samples from the sampler's own x_T."""
  def run(mu, s):
    x = samplers.sample(method, eps_star(mu, s), S, jax.random.PRNGKey(3), (n, 1),
                        num_steps=steps, eta=0.0, variance="beta_tilde", clip_x0=False).samples
    return x.mean() - mu, x.var() / s**2 - 1.0
  return jax.jit(run)


@settings(max_examples=3)
@given(MUS, SDS)
def test_every_sampler_draws_the_gaussian_data_with_error_shrinking_in_steps(mu, s):
  """40,000 samples from x_T ~ N(0, I), uniform spacing (the config default), eta = 0.

  Monte Carlo noise: mean s / 200, relative variance sqrt(2 / 40000) = 0.007. Measured
  relative variance errors (mu = 0.5, s = 0.1 / mu = 0.5, s = 0.3 / mu = -0.5, s = 0.6):
      ddpm  50 / 200 / 1000 steps: -0.53 / -0.24 / -0.069;  -0.29 / -0.10 / -0.027;
                                   -0.19 / -0.050 / -0.021
      ddim   5 / 10 / 50 steps:    -0.95 / -0.86 / -0.37;   -0.84 / -0.59 / -0.14;
                                   -0.65 / -0.38 / -0.073
      dpm++2m                      -0.94 / -0.86 / +0.34;   -0.83 / -0.55 / +0.25;
                                   -0.62 / -0.24 / +0.11
      heun                         +12.9 / +2.8 / +0.11;    +1.6 / +0.33 / +0.035;
                                   +0.62 / +0.15 / +0.028
  (DPM-Solver++(2M) at 50 steps is worst near s = 0.13: +0.39, its second-order step into
  t = 0 extrapolating over lambda 2.5 -> 4.6; see the quadratic-spacing test above.)
  DDPM (beta_tilde) under-disperses even with all 1000 steps: it leaves out Var(x0 | x_t)
  from the reverse variance (Bao et al. 2022, Analytic-DPM), worst for small s. The mean
  errors are at most 0.015 (Heun, 5 steps: uniform spacing starts at t = 800, where x has
  mean sqrt(alpha_bar_800) mu = 0.04 mu, not x_T's 0) and within the Monte Carlo noise at the
  largest step counts.
  """
  steps = {"ddpm": (50, 200, 1000), "ddim": (5, 10, 50), "dpm_solver_pp_2m": (5, 10, 50),
           "heun": (5, 10, 50)}
  mc_mean, mc_var = s / np.sqrt(40_000), np.sqrt(2 / 40_000)
  for method, counts in steps.items():
    err = [tuple(abs(float(e)) for e in random_errors(method, n)(mu, s)) for n in counts]
    var_err = [v for _, v in err]
    assert var_err[0] > var_err[1] > var_err[2], (method, err)
    assert err[-1][0] < 4 * mc_mean + 0.003, (method, err)
    assert var_err[-1] < {"ddpm": 0.08, "ddim": 0.4, "dpm_solver_pp_2m": 0.45,
                          "heun": 0.12}[method] + 4 * mc_var, (method, err)


# ---------------------------------------------------------------------------------------
# The algorithms themselves, checked against float64 transcriptions of the papers.

def smooth_model_np(x, t):
  """A nonlinear stand-in network (eps prediction), numpy float64."""
  return 0.6 * np.tanh(x) + 0.2 * np.sin(x + t / 300.0)


def smooth_model(x, t):
  t = t.reshape((-1,) + (1,) * (x.ndim - 1)).astype(jnp.float32)
  return 0.6 * jnp.tanh(x) + 0.2 * jnp.sin(x + t / 300.0)


def x0_np(x, t, clip):
  x0 = (x - np.sqrt(1 - AB[t]) * smooth_model_np(x, t)) / np.sqrt(AB[t])
  return np.clip(x0, -1, 1) if clip else x0


def dpm_solver_pp_2m_reference(x, ts_desc, clip, lower_order_final=True):
  """Lu et al. 2022, Alg. 2, with the first step and the step to data (sigma = 0) first
  order, and with lower_order_final and < 15 steps also the step into the last time step."""
  alpha, sigma = lambda t: np.sqrt(AB[t]), lambda t: np.sqrt(1 - AB[t])
  lam = lambda t: np.log(alpha(t) / sigma(t))
  n, x0_last = len(ts_desc), None
  for i, t in enumerate(ts_desc):
    x0 = x0_np(x, t, clip)
    if i == n - 1:
      return x0  # x_s = (0 / sigma_t) x_t - 1 * (e^{-inf} - 1) x0 = x0.
    s = ts_desc[i + 1]
    h = lam(s) - lam(t)
    if i == 0 or (lower_order_final and n < 15 and i == n - 2):
      d = x0
    else:
      r = (lam(t) - lam(ts_desc[i - 1])) / h
      d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_last
    x = sigma(s) / sigma(t) * x - alpha(s) * (np.exp(-h) - 1) * d
    x0_last = x0


def heun_reference(x_T, ts_desc, clip):
  """Karras et al. 2022, Alg. 1 with S_churn = 0 on sigma_i = sigma_hat(t_i), sigma_N = 0,
  x = x_t / alpha_t and D(x; sigma_i) = x0_hat(alpha_i x, t_i)."""
  alpha = lambda t: np.sqrt(AB[t])
  sig = [np.sqrt(1 - AB[t]) / np.sqrt(AB[t]) for t in ts_desc] + [0.0]
  den = lambda x, i: x0_np(alpha(ts_desc[i]) * x, ts_desc[i], clip)
  x = x_T / alpha(ts_desc[0])
  for i in range(len(ts_desc)):
    d = (x - den(x, i)) / sig[i]
    x_next = x + (sig[i + 1] - sig[i]) * d
    if sig[i + 1] != 0:
      d2 = (x_next - den(x_next, i + 1)) / sig[i + 1]
      x_next = x + (sig[i + 1] - sig[i]) * (d / 2 + d2 / 2)
    x = x_next
  return x


@pytest.mark.parametrize("spacing", ["uniform", "trailing"])
@pytest.mark.parametrize("steps", [1, 2, 3, 14, 15])
@pytest.mark.parametrize("method", ["dpm_solver_pp_2m", "heun"])
def test_solvers_match_float64_transcriptions_of_the_papers(method, steps, spacing):
  """The scan implementations equal step-by-step float64 transcriptions of Lu et al. 2022,
  Alg. 2 and Karras et al. 2022, Alg. 1 (clip_x0 on for odd step counts, off for even), from
  1 step up to either side of the lower_order_final threshold (15)."""
  shape, clip = (4, 3), steps % 2 == 1  # clip_x0 on and off.
  x_T = jax.random.normal(jax.random.PRNGKey(steps), shape) * 1.2
  ts_desc = schedules.sampling_timesteps(1000, steps, spacing)[::-1]
  got = samplers.sample(method, smooth_model, S, jax.random.PRNGKey(0), shape, num_steps=steps,
                        spacing=spacing, clip_x0=clip, x_T=x_T).samples
  ref = (dpm_solver_pp_2m_reference if method == "dpm_solver_pp_2m" else heun_reference)(
      np.asarray(x_T, np.float64), ts_desc, clip)
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-5)


def test_dpm_solver_without_lower_order_final_matches_its_transcription():
  x_T = jax.random.normal(jax.random.PRNGKey(5), (4, 3))
  ts_desc = schedules.sampling_timesteps(1000, 6, "quadratic")[::-1]
  got = samplers.dpm_solver_pp_2m_sample(smooth_model, S, jax.random.PRNGKey(0), (4, 3),
                                         num_steps=6, spacing="quadratic", clip_x0=False,
                                         x_T=x_T, lower_order_final=False).samples
  ref = dpm_solver_pp_2m_reference(np.asarray(x_T, np.float64), ts_desc, False, False)
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-5)
  on = samplers.dpm_solver_pp_2m_sample(smooth_model, S, jax.random.PRNGKey(0), (4, 3),
                                        num_steps=6, spacing="quadratic", clip_x0=False,
                                        x_T=x_T).samples
  assert not np.allclose(got, on)


def test_first_order_cases_are_ddim():
  """1 step: every ODE sampler returns x0_hat(x_T); 2 steps: DPM-Solver++(2M) has only its
  first-order steps, so it is DDIM (eta = 0)."""
  shape, key = (4, 3), jax.random.PRNGKey(2)
  run = lambda m, n: samplers.sample(m, smooth_model, S, key, shape, num_steps=n,
                                     spacing="trailing").samples
  for method in ("dpm_solver_pp_2m", "heun"):
    np.testing.assert_allclose(run(method, 1), run("ddim", 1), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(run("dpm_solver_pp_2m", 2), run("ddim", 2), rtol=1e-6, atol=1e-6)


@settings(max_examples=10)
@given(st.integers(1, 999), st.integers(0, 998), st.integers(0, 2**31 - 1))
def test_a_dpm_solver_step_with_the_true_x0_stays_on_the_noise_path(t, s, seed):
  """With the true x0 (a point mass), x_t = alpha_t x0 + sigma_t eps steps to x_s =
  alpha_s x0 + sigma_s eps, the same eps, for any history (the D-extrapolation vanishes)."""
  s = min(s, t - 1)
  x0 = jax.random.uniform(jax.random.PRNGKey(seed), (3, 5), minval=-1, maxval=1)
  eps = jax.random.normal(jax.random.PRNGKey(seed + 1), (3, 5))
  q = lambda t: forward.q_sample(S, x0, jnp.full((3,), t), eps)
  for t_last in (-1, min(t + 7, 999)):
    if t_last == t:
      continue
    x_s = samplers.dpm_solver_pp_2m_step(S, q(t), x0, x0, t, s, t_last)
    np.testing.assert_allclose(x_s, q(s), atol=2e-5 / max(float(S.sqrt_alpha_bars[t]), 1e-2))
  np.testing.assert_array_equal(samplers.dpm_solver_pp_2m_step(S, q(t), x0, x0, t, -1, -1), x0)


@pytest.mark.parametrize("kind", parameterization.PREDICTION_TYPES)
@pytest.mark.parametrize("method", ["dpm_solver_pp_2m", "heun"])
def test_with_the_point_mass_denoiser_every_step_stays_on_the_noise_path(method, kind):
  """For data = X0, every x of the trajectory is alpha_t X0 + sigma_t eps with eps = x_T's."""
  shape = (3, 4, 4, 1)
  x0 = jax.random.uniform(jax.random.PRNGKey(42), shape, minval=-1, maxval=1)

  def oracle(x, t):
    return parameterization.training_target(S, kind, x0, t, parameterization.eps_from_x0(S, x, t, x0))
  out = samplers.sample(method, oracle, S, jax.random.PRNGKey(0), shape, num_steps=7,
                        clip_x0=True, prediction_type=kind, return_trajectory=True)
  ts = schedules.sampling_timesteps(1000, 7)[::-1]
  # The eps with x_T = alpha_{t_max} X0 + sigma_{t_max} eps.
  eps = parameterization.eps_from_x0(S, out.trajectory[0], jnp.full((3,), ts[0]), x0)
  for i, t in enumerate(ts):
    np.testing.assert_allclose(out.trajectory[i], forward.q_sample(S, x0, jnp.full((3,), t), eps),
                               atol=1e-4)
  np.testing.assert_allclose(out.samples, x0, atol=1e-5)
  assert out.trajectory.shape == (8,) + shape


def test_one_network_trace_and_the_documented_nfe():
  """The network is traced once whatever num_steps (one scan body); it runs num_steps times
  for DPM-Solver++(2M) and 2 num_steps - 1 times for Heun."""
  traces, calls = [], []

  def model(x, t):
    traces.append(1)
    jax.debug.callback(lambda: calls.append(1))
    return 0.1 * x
  for method, nfe in (("dpm_solver_pp_2m", lambda n: n), ("heun", lambda n: 2 * n - 1)):
    for n in (3, 30):
      del traces[:], calls[:]
      out = samplers.sample(method, model, S, jax.random.PRNGKey(0), (2, 3), num_steps=n)
      jax.block_until_ready(out.samples)
      assert len(traces) == 1 and len(calls) == nfe(n), (method, n, len(traces), len(calls))


@pytest.mark.parametrize("method", ["dpm_solver_pp_2m", "heun"])
def test_sample_takes_the_config_kwargs_and_drops_eta_and_variance(method):
  config = default_config.get_config()
  config.sampling.method, config.sampling.num_steps = method, 12
  config.sampling.spacing, config.sampling.eta, config.sampling.variance = "trailing", 1.0, "beta"
  assert config.sampling.method in samplers.SAMPLERS  # config_validation's allowed methods.
  kwargs = generation.sampler_kwargs(config.sampling, config.diffusion)
  assert {"eta", "variance"} <= set(kwargs)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(1), i))(jnp.arange(2))
  got = samplers.sample(config.sampling.method, smooth_model, S, keys, (2, 3), **kwargs)
  fn = {"dpm_solver_pp_2m": samplers.dpm_solver_pp_2m_sample, "heun": samplers.heun_sample}[method]
  want = fn(smooth_model, S, keys, (2, 3), num_steps=12, spacing="trailing", clip_x0=True,
            prediction_type="eps")
  np.testing.assert_array_equal(got.samples, want.samples)
  traj = {m: samplers.sample(m, smooth_model, S, keys, (2, 3), num_steps=12,
                             return_trajectory=True).trajectory for m in ("ddim", method)}
  assert traj[method].shape == (13, 2, 3)
  np.testing.assert_array_equal(traj[method][0], traj["ddim"][0])  # Same x_T per key.
  with pytest.raises(TypeError):
    fn(smooth_model, S, keys, (2, 3), eta=1.0)


def test_unknown_sampler_names_the_allowed_ones():
  with pytest.raises(ValueError, match="sampler 'dpm_solver' is unknown; allowed: ddpm, ddim, "
                                       "dpm_solver_pp_2m, heun"):
    samplers.sample("dpm_solver", smooth_model, S, jax.random.PRNGKey(0), (2, 3))
  with pytest.raises(ValueError, match="timesteps must increase"):
    samplers.heun_sample(smooth_model, S, jax.random.PRNGKey(0), (2, 3), timesteps=[5, 5, 9])
  with pytest.raises(ValueError, match="prediction_type 'score'"):
    samplers.dpm_solver_pp_2m_sample(smooth_model, S, jax.random.PRNGKey(0), (2, 3),
                                     prediction_type="score")
