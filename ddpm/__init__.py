"""ddpm: denoising diffusion probabilistic models in JAX/Flax.

The diffusion math lives in pure functions (`schedules`, `diffusion`, `losses`, `samplers`),
the network in `unet`, and the training program around them in `train`, `input_pipeline`,
`checkpointing`, `sampling` and `main`.
"""

__version__ = "0.1.0"

from ddpm import xla_flags as _xla_flags

# Faster CPU convolutions (YNNPACK); must happen before JAX creates its backends. See xla_flags.
_xla_flags.add_default_cpu_flags()
