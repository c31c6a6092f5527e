"""The built-in config `mnist_conditional` (ddpm/configs/mnist_conditional.py); `--config=mnist_conditional` names the same file."""

from ddpm.configs.mnist_conditional import get_config

__all__ = ["get_config"]
