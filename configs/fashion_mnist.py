"""The built-in config `fashion_mnist` (ddpm/configs/fashion_mnist.py); `--config=fashion_mnist` names the same file."""

from ddpm.configs.fashion_mnist import get_config

__all__ = ["get_config"]
