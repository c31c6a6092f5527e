"""A trained network bound to the diffusion math.

  denoiser    a model and its parameters as the math's f(x_t, t), guided or not
  generation  the configured sampler run on every local device (pmap): N images from params
  pretrained  portable weights: a model as one .safetensors file with its settings, and back
"""

from ddpm.pipelines import denoiser, generation, pretrained
from ddpm.pipelines.denoiser import make_denoise_fn
from ddpm.pipelines.generation import draw, generate, make_generate_fn
from ddpm.pipelines.pretrained import load_pretrained

__all__ = ["denoiser", "generation", "pretrained", "make_denoise_fn", "draw", "generate",
           "make_generate_fn", "load_pretrained"]
