"""A tiny MNIST config for tests and smoke runs: compiles and trains in seconds on a CPU.

16x16 images (MNIST resized), a 2-level U-Net with 16 base channels, T = 100 with linear betas
rescaled to T (so x_T is still close to N(0, I)), DDIM with 10 steps for sample grids; the
edit and anomaly time steps scaled to T.
"""

from ddpm.configs import default as default_lib


def get_config():
  config = default_lib.get_config()
  config.data.dataset = "mnist"
  config.data.image_size = 16
  config.data.channels = 1
  config.data.resize_method = "resize"
  config.data.random_flip = False
  config.data.shuffle_buffer_size = 1000

  config.model.ch = 16
  config.model.ch_mult = (1, 2)
  config.model.num_res_blocks = 1
  config.model.attn_resolutions = (8,)
  config.model.dropout = 0.0
  config.model.num_groups = 8

  config.diffusion.num_timesteps = 100
  config.diffusion.scale_betas_to_1000 = True

  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 10
  config.optim.ema_decay = 0.99
  config.optim.ema_warmup = True

  config.training.batch_size = 32
  config.training.num_train_steps = 20
  config.training.log_every_steps = 5
  config.training.sample_every_steps = 20
  config.training.num_sample_images = 16
  config.training.checkpoint_every_steps = 10
  config.training.keep_checkpoints = 2

  # Defaults given in steps of T = 1000 elsewhere, scaled to this T = 100 so that every mode
  # runs on this config without overrides (tests/jobs/test_configs.py checks every config).
  config.edit.num_steps = 25
  config.anomaly.timesteps = (1, 5, 10, 20, 30, 50, 70)

  config.sampling.method = "ddim"
  config.sampling.num_steps = 10
  config.sampling.num_samples = 16
  config.sampling.batch_size = 16
  return config
