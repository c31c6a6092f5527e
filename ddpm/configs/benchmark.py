"""The matched workload of experiments/benchmark/: MNIST padded to 32x32x1 and a 1.6 M-parameter
U-Net, the size of the PyTorch peers it is measured beside (diffusers' UNet2DModel with
block_out_channels (32, 64, 64) and lucidrains' Unet(dim=32, dim_mults=(1, 2, 2))).

ch 32, ch_mult (1, 2, 2): 32 -> 16 -> 8, two residual blocks per level, attention at 8x8 (the
lowest resolution) and in the middle, dropout 0; the paper's linear betas over T = 1000, eps
prediction, Adam at 2e-4 with gradient clipping at 1 and EMA 0.9999 (the defaults), batch 64.
About 0.73 GFLOP forward per image. Samples: DDIM with 50 steps.

Also a training config (`--config=configs/benchmark.py`), but it is sized to match peers, not
for the best MNIST samples (configs/mnist.py is).
"""

from ddpm.configs import default as default_lib


def get_config():
  config = default_lib.get_config()
  config.data.dataset = "mnist"
  config.data.image_size = 32
  config.data.channels = 1
  config.data.resize_method = "pad"
  config.data.random_flip = False
  config.data.shuffle_buffer_size = 60_000

  config.model.ch = 32
  config.model.ch_mult = (1, 2, 2)
  config.model.num_res_blocks = 2
  config.model.attn_resolutions = (8,)
  config.model.dropout = 0.0
  config.model.num_groups = 32

  config.optim.learning_rate = 2e-4

  config.training.batch_size = 64
  config.training.sample_every_steps = 0

  config.sampling.method = "ddim"
  config.sampling.num_steps = 50
  config.sampling.batch_size = 64
  return config
