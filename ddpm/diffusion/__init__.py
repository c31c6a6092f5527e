"""The diffusion math: pure functions of arrays and a `Schedule`, jax and numpy only.

  schedules         beta schedules, the `Schedule` of derived constants, sampler time steps
  forward           q(x_t | x_0), the posterior q(x_s | x_t, x_0), per-example draws of (t, eps)
  parameterization  eps / x_0 / v predictions and the conversions between them
  losses            the training loss (L_simple on any target, Min-SNR weighting)
  samplers          DDPM, DDIM, DPM-Solver++(2M), Heun: one registry, `sample(method, ...)`
  keys              one PRNG key per batch or per example
  guidance          classifier-free guidance, class labels for sampling
  likelihood        the variational bound in bits/dim
  denoising         noise level to time step; one-step and reverse-process denoising, SDEdit
  inpainting        RePaint and its masks

A sampler is added to `samplers.py`: a function (denoise_fn, schedule, key, shape, **options)
-> SampleOutput, registered in its `SAMPLE_FNS` table and named in SAMPLERS.
"""

from ddpm.diffusion import (denoising, forward, guidance, inpainting, keys, likelihood, losses,
                            parameterization, samplers, schedules)
from ddpm.diffusion.forward import q_posterior_mean_variance, q_sample
from ddpm.diffusion.parameterization import model_output_to_x0_eps
from ddpm.diffusion.samplers import SAMPLERS, sample
from ddpm.diffusion.schedules import Schedule, make_schedule, sampling_timesteps

__all__ = ["denoising", "forward", "guidance", "inpainting", "keys", "likelihood", "losses",
           "parameterization", "samplers", "schedules", "q_posterior_mean_variance", "q_sample",
           "model_output_to_x0_eps", "SAMPLERS", "sample", "Schedule", "make_schedule",
           "sampling_timesteps"]
