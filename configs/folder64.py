"""The built-in config `folder64` (ddpm/configs/folder64.py); `--config=folder64` names the same file."""

from ddpm.configs.folder64 import get_config

__all__ = ["get_config"]
