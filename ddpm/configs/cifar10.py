"""CIFAR-10 with the DDPM paper's settings (Ho et al. 2020, Sec. 4 and App. B).

35.7 M parameters: ch 128, ch_mult (1, 2, 2, 2), 2 residual blocks per level, attention at
16x16, dropout 0.1; Adam at 2e-4 with 5000 warm-up steps, batch 128, gradient clipping at 1,
EMA 0.9999, linear betas 1e-4..0.02 over T = 1000, random horizontal flips, 800k steps.
This is an accelerator config: one step takes seconds on a 2-core CPU.
"""

from ddpm.configs import default as default_lib


def get_config():
  config = default_lib.get_config()
  config.data.dataset = "cifar10"
  config.data.image_size = 32
  config.data.channels = 3
  config.data.resize_method = "none"
  config.data.random_flip = True
  return config
