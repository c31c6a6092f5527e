"""A persistent XLA compilation cache for the command line: a restarted run loads its programs.

Every `python -m ddpm.main` process compiles its programs before it computes anything: the
train step of configs/mnist.py takes ~25 s on a 2-core CPU, the guided sampler of
`--mode=sample`/`--mode=eval` several seconds more. JAX's persistent compilation cache
(`jax_compilation_cache_dir`) stores each compiled executable on disk under a key of the
program, its compile options, the XLA flags, the devices and the jax/jaxlib versions; a later
process that compiles the same program loads it instead. A resumed or restarted run, and every
`--mode=sample`/`eval` after the first, then starts sooner (configs/tiny.py: 25.6 s -> 6.0 s to
its first step). The executable loaded is the one that was compiled, so every number a run
computes is bit for bit the same (tests/runtime/test_reliability.py restarts killed runs from
the cache and compares them with a run that had the cache off).

Where (`cache_dir`, pure):
  * DDPM_COMPILATION_CACHE=DIR: under DIR; =0 (or off/false/no) turns it off, also JAX's own
    JAX_COMPILATION_CACHE_DIR; =1 (or on/true/yes) or unset: the default place;
  * else JAX_COMPILATION_CACHE_DIR, when set, is JAX's own setting and is left as it is;
  * the default: $XDG_CACHE_HOME/ddpm/xla, i.e. ~/.cache/ddpm/xla.
Entries live in one subfolder per host CPU (`isa_tag`: the machine and a hash of the CPU's
model and feature flags), so a home directory shared by machines with different CPUs never
offers one machine's code to another. It grows by a few MB per config and mode; nothing evicts
entries (JAX's size limit needs the `filelock` package): delete the folder to reclaim it.

Known limits: jaxlib's CPU loader refuses every entry on some Intel CPUs (it takes the LLVM
tuning attributes +prefer-no-gather/+prefer-no-scatter for missing CPU features,
jax-ml/jax#38445); there the cache only costs an error line per program and the run compiles as
without it (DDPM_COMPILATION_CACHE=0 silences it). An entry a killed process left half-written
is reported by JAX as a warning and compiled again, every run, because JAX never overwrites an
entry: deleting the folder is always safe.

Only the command line uses it (`enable`, called by `ddpm.main`): importing `ddpm` as a library
leaves JAX's configuration as the user has it.
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Mapping

ENV = "DDPM_COMPILATION_CACHE"
JAX_ENV = "JAX_COMPILATION_CACHE_DIR"
OFF_VALUES = ("0", "off", "false", "no")
DEFAULT_VALUES = ("", "1", "on", "true", "yes")


def isa_tag(machine: str, cpuinfo: str) -> str:
  """`<machine>-<12 hex digits>` naming the host CPU: a hash of /proc/cpuinfo's first model
  name line and the sorted feature flags of its first `flags` (x86) or `Features` (Arm) line;
  `<machine>` alone where there is no flags line (e.g. not Linux)."""
  fields = {}
  for line in cpuinfo.splitlines():
    key, sep, value = line.partition(":")
    key = key.strip()
    if sep and key in ("model name", "flags", "Features") and key not in fields:
      fields[key] = value
  flags = fields.get("flags", fields.get("Features"))
  if flags is None:
    return machine
  text = fields.get("model name", "").strip() + "|" + " ".join(sorted(set(flags.split())))
  return f"{machine}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def is_off(environ: Mapping[str, str]) -> bool:
  """Whether DDPM_COMPILATION_CACHE turns the cache off (0, off, false or no)."""
  return environ.get(ENV, "").strip().lower() in OFF_VALUES


def cache_dir(environ: Mapping[str, str], home: str, tag: str) -> str | None:
  """The absolute cache folder for the environment `environ` (see the module docstring), or
  None when it is off or JAX's own JAX_COMPILATION_CACHE_DIR applies. Pure; a relative
  DDPM_COMPILATION_CACHE is taken from `environ`'s PWD, a relative XDG_CACHE_HOME is ignored
  (as the XDG spec says)."""
  if is_off(environ):
    return None
  value = environ.get(ENV, "").strip()
  if value.lower() in DEFAULT_VALUES:
    if environ.get(JAX_ENV, "").strip():
      return None
    xdg = environ.get("XDG_CACHE_HOME", "").strip()
    root = os.path.join(xdg if os.path.isabs(xdg) else os.path.join(home, ".cache"), "ddpm",
                        "xla")
  else:
    root = os.path.join(environ.get("PWD", "/"), os.path.expanduser(value))
  return os.path.normpath(os.path.join(root, tag))


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
  path = cache_dir({**environ, "PWD": os.getcwd()}, os.path.expanduser("~"), host_isa_tag())
  if path is not None:
    try:
      os.makedirs(path, exist_ok=True)
    except OSError as e:
      return f"XLA compilation cache: off ({path} cannot be created: {e.strerror or e})."
    if not os.access(path, os.W_OK | os.X_OK):
      return f"XLA compilation cache: off ({path} is not writable)."
    jax.config.update("jax_compilation_cache_dir", path)
  where = jax.config.jax_compilation_cache_dir
  if not jax.config.jax_enable_compilation_cache or not where:
    return "XLA compilation cache: off (JAX's settings)."
  source = f"{ENV}=0 turns it off" if path is not None else f"from {JAX_ENV}"
  return f"XLA compilation cache: {where} ({source})."
