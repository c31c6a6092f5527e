"""A folder of your own RGB images at 64x64, sized for a CPU smoke run:
`--config=folder64 --config.data.data_dir=PATH`.

The `folder` config (splits, preprocessing, v-prediction with Min-SNR-5) at 64x64 with a
U-Net of four levels, 64 -> 32 -> 16 -> 8 (ch 32, ch_mult (1, 1, 2, 2), one residual block
per level, attention at 8x8; 1.2 M parameters), batch 32. A step is ~4x one of `folder` per
image; for quality, train on an accelerator.
"""

from ddpm.configs import folder


def get_config():
  config = folder.get_config()
  config.data.image_size = 64

  config.model.ch = 32
  config.model.ch_mult = (1, 1, 2, 2)
  config.model.num_res_blocks = 1
  config.model.attn_resolutions = (8,)
  config.model.dropout = 0.0

  config.training.batch_size = 32
  config.training.num_sample_images = 16
  config.sampling.num_samples = 16
  config.sampling.batch_size = 16
  return config
