"""The built-in config `default` (ddpm/configs/default.py); `--config=default` names the same file."""

from ddpm.configs.default import get_config

__all__ = ["get_config"]
