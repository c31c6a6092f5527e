"""The built-in config `cifar10` (ddpm/configs/cifar10.py); `--config=cifar10` names the same file."""

from ddpm.configs.cifar10 import get_config

__all__ = ["get_config"]
