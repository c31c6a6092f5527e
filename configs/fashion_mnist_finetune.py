"""The built-in config `fashion_mnist_finetune` (ddpm/configs/fashion_mnist_finetune.py); `--config=fashion_mnist_finetune` names the same file."""

from ddpm.configs.fashion_mnist_finetune import get_config

__all__ = ["get_config"]
