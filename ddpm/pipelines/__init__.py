"""A trained network bound to the diffusion math.

  denoiser    a model and its parameters as the math's f(x_t, t), guided or not
  generation  the configured sampler run on every local device (pmap): N images from params
"""

from ddpm.pipelines import denoiser, generation
from ddpm.pipelines.denoiser import make_denoise_fn
from ddpm.pipelines.generation import draw, generate, make_generate_fn

__all__ = ["denoiser", "generation", "make_denoise_fn", "draw", "generate", "make_generate_fn"]
