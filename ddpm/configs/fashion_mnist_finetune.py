"""Fine-tuning the class-conditional MNIST model on Fashion-MNIST (ddpm/training/finetune.py).

configs/mnist_conditional.py's model on fashion_mnist (also 10 classes, 28x28x1), a short run
of 800 steps with a 100-step warm-up. Give the source run and, optionally, what to train:

  python -m ddpm.main --config=configs/fashion_mnist_finetune.py --workdir=workdirs/fashion_ft \\
      --config.training.init_from=workdirs/mnist_cond \\
      --config.training.trainable='^up_,^out_norm,^conv_out,^class_embedding'

Without init_from this trains the same model from scratch for the same steps: the baseline of
experiments/conditional/finetune_fashion.sh.
"""

from ddpm.configs import mnist_conditional


def get_config():
  config = mnist_conditional.get_config()
  config.data.dataset = "fashion_mnist"
  config.optim.warmup_steps = 100
  config.training.num_train_steps = 800
  config.training.sample_every_steps = 400
  config.training.checkpoint_every_steps = 400
  config.training.keep_every_steps = 0
  return config
