r"""The variational bound on -log p(x_0) in bits per dimension (Ho et al. 2020, eq. 5 and 13).

  L = L_T + sum_{t>1} L_{t-1} + L_0,
  L_T     = KL(q(x_T | x_0) || N(0, I))                               (prior term)
  L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))          (Gaussian KLs)
  L_0     = -log p_theta(x_0 | x_1)   with the discretized Gaussian decoder of eq. 13.

Time steps here are 0-based like the rest of the package: index t = 0 is the paper's t = 1, so
the term at index 0 is the decoder NLL L_0 and the term at index t >= 1 is the KL L_t
between q(x_{t-1} | x_t, x_0) and the model's reverse step with mean mu_theta(x_t, t)
(from the predicted x_0, eq. 7) and a fixed variance: beta_tilde_t ("beta_tilde", clipped at
t = 0 as in the reference code) or beta_t ("beta", with beta_tilde_1 at index 0).

Every term is a mean over the D pixel values divided by ln 2, i.e. bits per dimension, for
data x_0 in [-1, 1] that came from 8-bit integers. Summing all T terms costs T network
evaluations per image; `bpd_estimate` draws one t per stratum of K strata instead (stratified
sampling: unbiased, exact when K = T; narrow strata at small t, where the bound's mass is).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr

from ddpm.diffusion import forward, parameterization, samplers
from ddpm.diffusion.schedules import Schedule

LN2 = float(np.log(2.0))


def _mean_flat(x):
  return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2):
  """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, in nats:

  0.5 (logvar2 - logvar1 + e^(logvar1 - logvar2) + (mean1 - mean2)^2 e^-logvar2 - 1).
  """
  return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                + (mean1 - mean2) ** 2 * jnp.exp(-logvar2))


def _log_normal_interval(a, b):
  """log(Phi(b) - Phi(a)) for a < b, accurate in both tails (uses Phi(b)-Phi(a) = Phi(-a)-Phi(-b))."""
  flip = a > 0
  lo, hi = jnp.where(flip, -b, a), jnp.where(flip, -a, b)
  log_hi, log_lo = log_ndtr(hi), log_ndtr(lo)
  return log_hi + jnp.log(-jnp.expm1(jnp.minimum(log_lo - log_hi, -1e-30)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
  """log p(x) per element under N(means, e^(2 log_scales)) discretized to 256 levels (eq. 13).

  x must lie on the grid {-1, -1 + 2/255, ..., 1}; each level owns the interval of width 2/255
  around it, the two edge levels extend to -inf and +inf, so the 256 probabilities sum to 1.
  """
  inv_std = jnp.exp(-log_scales)
  upper = inv_std * (x - means + 1.0 / 255.0)
  lower = inv_std * (x - means - 1.0 / 255.0)
  return jnp.where(x < -0.999, log_ndtr(upper),
                   jnp.where(x > 0.999, log_ndtr(-lower), _log_normal_interval(lower, upper)))


def model_log_variances(schedule: Schedule, variance: str = "beta_tilde"):
  """log of the fixed reverse-process variance at every 0-based step [T] (Ho et al. 2020, Sec. 3.2)."""
  if variance == "beta_tilde":
    return schedule.posterior_log_variance_clipped
  if variance == "beta":
    return jnp.log(jnp.concatenate([schedule.posterior_variance[1:2], schedule.betas[1:]]))
  raise ValueError(f"variance {variance!r} is unknown; allowed: {', '.join(samplers.VARIANCES)}.")


def prior_bpd(schedule: Schedule, x0):
  """L_T in bits/dim per image: KL(q(x_T | x_0) || N(0, I))."""
  t = jnp.full((x0.shape[0],), schedule.num_timesteps - 1, jnp.int32)
  mean, var = forward.q_mean_variance(schedule, x0, t)
  return _mean_flat(normal_kl(mean, jnp.log(var), 0.0, 0.0)) / LN2


def vlb_term_bpd(schedule: Schedule, model_output, x0, xt, t, *, prediction_type: str = "eps",
                 variance: str = "beta_tilde", clip_x0: bool = True):
  """The bound's term at 0-based steps t [B] in bits/dim: L_0 where t = 0, else the KL L_t."""
  x0_hat, _ = parameterization.model_output_to_x0_eps(schedule, prediction_type, model_output,
                                                      xt, t, clip_x0=clip_x0)
  model_mean, _, _ = forward.q_posterior_mean_variance(schedule, x0_hat, xt, t)
  true_mean, _, true_logvar = forward.q_posterior_mean_variance(schedule, x0, xt, t)
  logvar = forward.extract(model_log_variances(schedule, variance), t, x0.shape)
  kl = _mean_flat(normal_kl(true_mean, true_logvar, model_mean, logvar)) / LN2
  nll = -_mean_flat(discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * logvar)) / LN2
  return jnp.where(t == 0, nll, kl)


class BpdEstimate(NamedTuple):
  total: jnp.ndarray  # [B] bits/dim: L_T + the (estimated) sum over t of the terms.
  prior: jnp.ndarray  # [B] L_T.
  terms: jnp.ndarray  # [B, K] the sampled terms.
  timesteps: jnp.ndarray  # [B, K] their steps.


def strata(num_timesteps: int, num_strata: int) -> np.ndarray:
  """Edges 0 = e_0 < ... < e_K = T of K strata of {0..T-1}, quadratically spaced.

  Most of the bound sits in the first steps (L_0 and the KLs at small t are large and change
  fast), so strata are narrow there (single steps, evaluated exactly) and wide at large t,
  where the terms are small and smooth: e_k ~ T (k / K)^2, pushed apart to be strictly
  increasing. Any edges keep the estimate unbiased; these keep its variance low.
  """
  T, K = int(num_timesteps), int(num_strata)
  if not 1 <= K <= T:
    raise ValueError(f"num_strata={num_strata} must be in [1, num_timesteps={num_timesteps}].")
  e = np.round(T * (np.arange(K + 1) / K) ** 2).astype(np.int64)
  for k in range(1, K + 1):  # Strictly increasing from the left ...
    e[k] = max(e[k], e[k - 1] + 1)
  e[K] = T
  for k in range(K - 1, 0, -1):  # ... and within T from the right.
    e[k] = min(e[k], e[k + 1] - 1)
  return e.astype(np.int32)


def bpd_estimate(denoise_fn, schedule: Schedule, x0, key, *, num_strata: int,
                 prediction_type: str = "eps", variance: str = "beta_tilde",
                 clip_x0: bool = True) -> BpdEstimate:
  """Unbiased per-image estimate of the bound in bits/dim with one t per stratum.

  For strata [e_k, e_{k+1}) the estimate is L_T + sum_k (e_{k+1} - e_k) L_{t_k}, t_k uniform in
  stratum k, x_{t_k} ~ q(x_t | x_0): E[...] = L_T + sum_t L_t. With num_strata = T every term is
  evaluated once (only x_t is random). `denoise_fn(x_t, t)` is the model; `key` one key.
  """
  T = schedule.num_timesteps
  edges = jnp.asarray(strata(T, num_strata))
  widths = (edges[1:] - edges[:-1]).astype(jnp.float32)
  b = x0.shape[0]
  t_key, n_key = jax.random.split(key)
  ts = edges[:-1][None, :] + jnp.floor(
      jax.random.uniform(t_key, (b, num_strata)) * widths[None, :]).astype(jnp.int32)
  noise_keys = jax.random.split(n_key, num_strata)

  def one(_, inputs):
    t, k = inputs
    xt = forward.q_sample(schedule, x0, t, jax.random.normal(k, x0.shape, x0.dtype))
    out = denoise_fn(xt, t).astype(jnp.float32)
    return None, vlb_term_bpd(schedule, out, x0, xt, t, prediction_type=prediction_type,
                              variance=variance, clip_x0=clip_x0)

  _, terms = jax.lax.scan(one, None, (ts.T, noise_keys))
  terms = terms.T
  prior = prior_bpd(schedule, x0)
  return BpdEstimate(prior + terms @ widths, prior, terms, ts)
