"""A persistent XLA compilation cache for the command line: a restarted run loads its programs.

Every `python -m ddpm.main` process compiles its programs before it computes anything: the
train step of configs/mnist.py takes ~25 s on a 2-core CPU, the guided sampler of
`--mode=sample`/`--mode=eval` as long again. JAX's persistent compilation cache
(`jax_compilation_cache_dir`) stores each compiled executable on disk under a key of the
program, its compile options, the XLA flags, the devices and the jax/jaxlib versions; a later
process that compiles the same program loads it instead. A resumed or restarted run, and every
`--mode=sample`/`eval` after the first, then starts in seconds (configs/tiny.py: 28.7 s ->
5.8 s to its first step). The executable loaded is the one that was compiled, so every number a
run computes is bit for bit the same (tests/runtime/test_reliability.py restarts killed runs
from the cache and compares them with an uncached run).

Where (`cache_dir`, pure):
  * DDPM_COMPILATION_CACHE=DIR puts it in DIR; =0 (or off/false/no) turns it off;
  * JAX_COMPILATION_CACHE_DIR, when set, is JAX's own setting and is left as it is;
  * otherwise $XDG_CACHE_HOME/ddpm/xla, i.e. ~/.cache/ddpm/xla.
Entries live in one subfolder per host instruction set (`isa_tag`: the machine and a hash of
the CPU's feature flags), so a home directory shared by machines with different CPUs never
offers one machine's code to another (jaxlib's CPU loader refuses such an entry, and every
process would compile anew: jax-ml/jax#38445).

Only the command line uses it (`enable`, called by `ddpm.main`): importing `ddpm` as a library
leaves JAX's configuration as the user has it. JAX reports an entry it cannot read (e.g. one a
killed process left half-written) as a warning and compiles the program; deleting the folder
is always safe.
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Mapping

ENV = "DDPM_COMPILATION_CACHE"
JAX_ENV = "JAX_COMPILATION_CACHE_DIR"
OFF_VALUES = ("0", "off", "false", "no")


def isa_tag(machine: str, cpuinfo: str) -> str:
  """`<machine>-<12 hex digits>` naming the host's instruction set: a hash of the sorted CPU
  feature flags of /proc/cpuinfo's first `flags` (x86) or `Features` (Arm) line; `<machine>`
  alone where there is no such line (e.g. not Linux)."""
  for line in cpuinfo.splitlines():
    key, sep, value = line.partition(":")
    if sep and key.strip() in ("flags", "Features"):
      flags = " ".join(sorted(set(value.split())))
      return f"{machine}-{hashlib.sha256(flags.encode()).hexdigest()[:12]}"
  return machine


def is_off(environ: Mapping[str, str]) -> bool:
  """Whether DDPM_COMPILATION_CACHE turns the cache off (0, off, false or no)."""
  return environ.get(ENV, "").strip().lower() in OFF_VALUES


def cache_dir(environ: Mapping[str, str], home: str, tag: str) -> str | None:
  """The cache folder for the environment `environ` (see the module docstring), or None when
  it is off or JAX's own JAX_COMPILATION_CACHE_DIR applies. Pure."""
  if is_off(environ) or environ.get(JAX_ENV, "").strip():
    return None
  root = (environ.get(ENV, "").strip() or os.path.join(
      environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(home, ".cache"), "ddpm", "xla"))
  return os.path.join(os.path.expanduser(root), tag)


def host_isa_tag() -> str:
  """`isa_tag` of this machine."""
  try:
    with open("/proc/cpuinfo") as f:
      cpuinfo = f.read()
  except OSError:
    cpuinfo = ""
  return isa_tag(platform.machine() or "unknown", cpuinfo)


def enable(environ: Mapping[str, str] | None = None) -> str:
  """Points JAX's persistent compilation cache at `cache_dir`, or turns JAX's off when
  DDPM_COMPILATION_CACHE says so (call it before the first compile); returns a line for the
  log saying where the cache is, or why there is none."""
  import jax  # pylint: disable=g-import-not-at-top

  environ = os.environ if environ is None else environ
  if is_off(environ):
    jax.config.update("jax_enable_compilation_cache", False)
    return f"XLA compilation cache: off ({ENV}={environ[ENV]})."
  path = cache_dir(environ, os.path.expanduser("~"), host_isa_tag())
  if path is None:
    return f"XLA compilation cache: {environ[JAX_ENV]} (from {JAX_ENV})."
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    return f"XLA compilation cache: off ({path} cannot be created: {e.strerror})."
  jax.config.update("jax_compilation_cache_dir", path)
  return f"XLA compilation cache: {path} ({ENV}=0 turns it off)."
