"""The built-in config `benchmark` (ddpm/configs/benchmark.py); `--config=benchmark` names the same file."""

from ddpm.configs.benchmark import get_config

__all__ = ["get_config"]
