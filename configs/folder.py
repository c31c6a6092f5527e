"""The built-in config `folder` (ddpm/configs/folder.py); `--config=folder` names the same file."""

from ddpm.configs.folder import get_config

__all__ = ["get_config"]
