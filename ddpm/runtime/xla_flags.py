"""XLA flags that ddpm turns on for the CPU backend, set before JAX creates its backends.

By default XLA's CPU backend runs convolutions through Eigen, which on a 2-core AVX-512 machine
reaches 80-100 GFLOP/s forward and 65-80 GFLOP/s forward + backward on this U-Net's 3x3
convolutions, ~40% of what a matmul reaches there. `--xla_cpu_experimental_ynn_fusion_type=dot`
hands dots and convolutions to YNNPACK instead: 150-180 GFLOP/s forward, 110-160 forward +
backward, which made the training step 1.3x and the sampler step 1.8x faster
(experiments/benchmark/RESULTS.md has the side-by-side runs). The other fusion types of the same
flag (eltwise, reduce) and XNNPACK's graph fusion measured no gain or a loss and are not set.

XLA reads XLA_FLAGS once, when the first backend is created, so `add_default_cpu_flags` runs
when `ddpm` is imported (before any JAX computation in `python -m ddpm.main`, the notebook and
the tests). It never overrides a flag the user set in XLA_FLAGS, does nothing when
DDPM_NO_XLA_CPU_FLAGS=1, and leaves machines with an accelerator plugin (TPU, CUDA, ROCm) alone:
the flag only concerns the CPU backend, and another XLA build might not know it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from collections.abc import Mapping, MutableMapping

# name -> value of the flags ddpm adds for the CPU backend.
CPU_FLAGS: dict[str, str] = {"xla_cpu_experimental_ynn_fusion_type": "dot"}
OPT_OUT_ENV = "DDPM_NO_XLA_CPU_FLAGS"
_ACCELERATOR_PLUGINS = ("libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin",
                        "jax_rocm60_plugin", "jax_rocm7_plugin")


def accelerator_installed() -> bool:
  """Whether a TPU or GPU plugin of JAX is installed (then ddpm leaves XLA's flags alone)."""
  return any(importlib.util.find_spec(name) is not None for name in _ACCELERATOR_PLUGINS)


def _backends_initialized() -> bool:
  if "jax" not in sys.modules:  # Not imported, so no backend: and importing it costs ~1.5 s.
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):  # A JAX without this helper: assume not yet.
    return False


def is_set(environ: Mapping[str, str], name: str) -> bool:
  """Whether the switch `name` is on: set to anything but "" or "0"."""
  return environ.get(name, "") not in ("", "0")


def jax_runs_on_cpu(environ: Mapping[str, str], accelerator_installed: bool) -> bool:
  """Whether JAX will compute on the CPU: JAX_PLATFORMS empty or naming "cpu", and, when an
  accelerator plugin is installed, JAX_PLATFORMS restricting JAX to the CPU alone."""
  platforms = [p.strip() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
  if platforms and "cpu" not in platforms:
    return False
  return not accelerator_installed or platforms == ["cpu"]


def cpu_flags_to_add(environ: MutableMapping[str, str],
                     accelerator_installed: bool) -> list[str]:
  """The `--name=value` flags of CPU_FLAGS that XLA_FLAGS should gain (pure; no side effects).

  None when the user opted out (`DDPM_NO_XLA_CPU_FLAGS` set to anything but "" or "0"), when
  JAX_PLATFORMS names platforms without "cpu", or when an accelerator plugin is installed and
  JAX_PLATFORMS does not restrict JAX to the CPU; otherwise each flag whose name XLA_FLAGS does
  not already mention.
  """
  if is_set(environ, OPT_OUT_ENV) or not jax_runs_on_cpu(environ, accelerator_installed):
    return []
  current = environ.get("XLA_FLAGS", "")
  return [f"--{name}={value}" for name, value in CPU_FLAGS.items() if name not in current]


def add_default_cpu_flags(environ: MutableMapping[str, str] | None = None) -> list[str]:
  """Appends `cpu_flags_to_add` to XLA_FLAGS in `environ` (os.environ); returns what it added.

  If JAX's backends already exist the flags could no longer take effect: nothing is changed
  and a warning says how to get them (import ddpm, or set XLA_FLAGS, before using JAX).
  """
  environ = os.environ if environ is None else environ
  flags = cpu_flags_to_add(environ, accelerator_installed())
  if not flags:
    return []
  if _backends_initialized():
    logging.warning(
        "ddpm: JAX was initialised before ddpm was imported, so XLA's CPU backend runs without "
        "%s (up to 1.8x slower convolutions); import ddpm before the first JAX computation or "
        "set XLA_FLAGS yourself.", " ".join(flags))
    return []
  environ["XLA_FLAGS"] = " ".join([environ.get("XLA_FLAGS", "").strip(), *flags]).strip()
  return flags
