"""MNIST at 28x28 sized for a 2-core CPU: recognizable digits from a run of under an hour.

A 1.1 M-parameter U-Net (ch 32, ch_mult (1, 2, 2): 28 -> 14 -> 7, one residual block per
level, attention at 7x7), the paper's linear betas over T = 1000 and eps prediction, Adam at
1e-3 (a small model tolerates a larger rate than the paper's 2e-4) with 200 warm-up steps,
batch 64, EMA 0.999 with warm-up, 3500 steps (3.7 epochs).

Measured on this 2-core CPU (experiments/mnist/README.md has the commands and figures):
3500 steps in 49 minutes at a median 1.34 steps/s (85.6 images/s), final L_simple 0.025;
DDPM sampling with 1000 steps then draws recognizable digits of every class.
"""

from ddpm.configs import default as default_lib


def get_config():
  config = default_lib.get_config()
  config.data.dataset = "mnist"
  config.data.image_size = 28
  config.data.channels = 1
  config.data.resize_method = "none"
  config.data.random_flip = False
  config.data.shuffle_buffer_size = 60_000

  config.model.ch = 32
  config.model.ch_mult = (1, 2, 2)
  config.model.num_res_blocks = 1
  config.model.attn_resolutions = (7,)
  config.model.dropout = 0.0
  config.model.num_groups = 32

  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 200
  config.optim.ema_decay = 0.999
  config.optim.ema_warmup = True

  config.training.batch_size = 64
  config.training.num_train_steps = 3500
  config.training.log_every_steps = 50
  config.training.sample_every_steps = 500
  config.training.num_sample_images = 64
  config.training.checkpoint_every_steps = 500
  config.training.keep_checkpoints = 3

  # Grids during training: DDIM with 100 steps (about 20 s for 64 images on 2 cores).
  config.sampling.method = "ddim"
  config.sampling.num_steps = 100
  return config
