"""The built-in config `tiny` (ddpm/configs/tiny.py); `--config=tiny` names the same file."""

from ddpm.configs.tiny import get_config

__all__ = ["get_config"]
