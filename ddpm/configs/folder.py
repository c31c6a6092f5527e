"""A folder of your own RGB images at 32x32: `--config=folder --config.data.data_dir=PATH`.

Every PNG/JPEG/WebP/BMP/GIF under PATH (recursively; `ddpm.data.image_folder`), the shorter
side resized to 32 and centre-cropped, random horizontal flips. The first 90% of the files (in
path order) train, the last 10% are held out: they are the real images the FID floor, the
editing modes and the anomaly scores use. For class-conditional training on subfolders
(`PATH/<class>/...`) add --config.model.num_classes=K.

A 1.6 M-parameter U-Net (ch 32, ch_mult (1, 2, 2): 32 -> 16 -> 8, two residual blocks per
level, attention at 8x8), v-prediction with Min-SNR-5 weighting (what paid most on MNIST,
experiments/quality), Adam at 1e-3, batch 64, EMA 0.999 with warm-up; DDIM 50 for the grids.
Sized for a CPU: a few thousand steps are an afternoon on 2 cores, minutes on a GPU.
"""

from ddpm.configs import default as default_lib


def get_config():
  config = default_lib.get_config()
  config.data.dataset = "image_folder"
  config.data.data_dir = ""  # Set it: --config.data.data_dir=PATH.
  config.data.split = "train[:90%]"
  config.data.eval_split = "train[90%:]"
  config.data.image_size = 32
  config.data.channels = 3
  config.data.resize_method = "resize"
  config.data.random_flip = True
  config.data.shuffle_buffer_size = 10_000
  config.data.bad_images = "stop"

  config.model.ch = 32
  config.model.ch_mult = (1, 2, 2)
  config.model.num_res_blocks = 2
  config.model.attn_resolutions = (8,)
  config.model.dropout = 0.1
  config.model.num_groups = 16

  config.diffusion.prediction_type = "v"
  config.diffusion.loss_weighting = "min_snr"
  config.diffusion.min_snr_gamma = 5.0

  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 200
  config.optim.ema_decay = 0.999
  config.optim.ema_warmup = True

  config.training.batch_size = 64
  config.training.num_train_steps = 5000
  config.training.log_every_steps = 50
  config.training.sample_every_steps = 500
  config.training.num_sample_images = 64
  config.training.checkpoint_every_steps = 500
  config.training.keep_checkpoints = 3

  config.sampling.method = "ddim"
  config.sampling.num_steps = 50
  config.sampling.spacing = "trailing"

  # Real images for the evaluation and editing modes: the held-out 10%.
  config.eval.reference_split = "train[:90%]"
  config.eval.real_split = "train[90%:]"
  config.anomaly.normal_split = "train[90%:]"
  return config
