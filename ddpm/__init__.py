"""ddpm: denoising diffusion probabilistic models in JAX/Flax.

The package is layered: each layer imports only itself and layers listed before it.

  diffusion/      the math: schedules, forward process, parameterizations, losses, samplers,
                  guidance, likelihood, denoising, RePaint. Pure functions of arrays and a
                  Schedule; jax and numpy only.
  runtime/        processes, devices, checkpoints and XLA flags.
  models/         the Flax networks (U-Net, feature classifier, Inception-v3), built from a config.
  data/           images in and out: the tfds/tf.data pipeline, image files, TFDS writer.
  pipelines/      a trained network bound to the math: the denoiser f(x_t, t), drawing samples
                  on every device.
  evaluation/     metrics (FID, IS, precision/recall, PSNR, AUROC), feature extractors, and
                  sample / denoiser quality of a model.
  visualization/  grids, labelled figures, pictures of the process.
  training/       the pmap-ed train step, optimizer, EMA, fine-tuning, the classifier's training.
  jobs/           one module per --mode (train, sample, eval, inpaint, process, denoise,
                  synthesize, anomaly, export); `main` is the command line over them.

The names below are loaded on first use, so `import ddpm.diffusion` costs no Flax, orbax or
TensorFlow:

    import ddpm
    schedule = ddpm.make_schedule("linear", 1000)
    out = ddpm.sample("ddim", denoise_fn, schedule, key, (16, 28, 28, 1), num_steps=50)
    state = ddpm.setup_job("train", config, workdir).run()
    p = ddpm.load_pretrained("model_step20000_ema.safetensors")  # --mode=export's file.
"""

import importlib

__version__ = "0.1.0"

from ddpm.runtime import xla_flags as _xla_flags

# Faster CPU convolutions (YNNPACK); must happen before JAX creates its backends. See xla_flags.
_xla_flags.add_default_cpu_flags()

SUBPACKAGES = ("diffusion", "runtime", "models", "data", "pipelines", "evaluation",
               "visualization", "training", "jobs")
# name -> the module that defines it.
API = {
    "Schedule": "ddpm.diffusion.schedules",
    "make_schedule": "ddpm.diffusion.schedules",
    "schedule_from_config": "ddpm.diffusion.schedules",
    "q_sample": "ddpm.diffusion.forward",
    "sample": "ddpm.diffusion.samplers",
    "SAMPLERS": "ddpm.diffusion.samplers",
    "UNet": "ddpm.models.unet",
    "create_model": "ddpm.models.build",
    "make_denoise_fn": "ddpm.pipelines.denoiser",
    "draw": "ddpm.pipelines.generation",
    "extractor_for": "ddpm.evaluation.features",
    "setup_job": "ddpm.jobs",
    "load_pretrained": "ddpm.pipelines.pretrained",
}
__all__ = sorted(SUBPACKAGES + tuple(API))


def __getattr__(name):
  if name in SUBPACKAGES:
    return importlib.import_module(f"ddpm.{name}")
  if name in API:
    return getattr(importlib.import_module(API[name]), name)
  raise AttributeError(f"module 'ddpm' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(__all__))
