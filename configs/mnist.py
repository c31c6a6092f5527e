"""The built-in config `mnist` (ddpm/configs/mnist.py); `--config=mnist` names the same file."""

from ddpm.configs.mnist import get_config

__all__ = ["get_config"]
