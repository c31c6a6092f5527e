"""tcmalloc for the command line on CPU: `python -m ddpm.main` re-executes itself under it.

glibc's malloc hands every buffer above 32 MiB (its largest `mmap_threshold`) back to the kernel
when XLA frees it, so each training step faults the pages of its large activations in and zeroes
them again. On the README's MNIST run (2-core CPU, batch 64) that is ~10 M minor page faults and
~13% of the CPU time in the kernel per 120 steps; tcmalloc keeps the freed spans and reuses them:
11x fewer faults, 3.5x less system time, and training ran 1.27x the steps per second in
interleaved runs (experiments/benchmark/allocator_ab.py, malloc_tunables.md). glibc's own
tunables (thresholds, huge pages) and jemalloc measured no reliable gain.

The allocator of a process is chosen when it starts, so the command line re-executes itself
(same process id and arguments; the environment gains LD_PRELOAD, DDPM_TCMALLOC_REEXEC and
TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD) before anything heavy is imported. Only when all hold:
  * this process is the command line itself: `python -m ddpm.main ...` or the `ddpm` script,
    with its arguments untouched (not a notebook, REPL, `python -c`, stdin or a wrapper that
    calls `ddpm.main.run`);
  * Linux, and a tcmalloc library is installed (Debian/Ubuntu: `apt install
    libtcmalloc-minimal4`); without one, one log line says what it would give;
  * neither DDPM_NO_TCMALLOC nor DDPM_NO_XLA_CPU_FLAGS (every CPU-specific lever off) is set to
    anything but "" or "0";
  * JAX is meant for the CPU: no accelerator plugin installed, or JAX_PLATFORMS=cpu (on GPU/TPU
    hosts the code path is unchanged);
  * LD_PRELOAD is empty (a user's preloads, e.g. a sanitizer, are left as they are), and this
    process is not already the re-executed one (DDPM_TCMALLOC_REEXEC marks it).
If the exec itself fails, the run goes on with glibc's malloc. Importing `ddpm` as a library
never changes the allocator. The allocator does not change any number a run computes (tested).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from ddpm.runtime import xla_flags

OPT_OUT_ENV = "DDPM_NO_TCMALLOC"
ALL_CPU_LEVERS_OPT_OUT_ENV = xla_flags.OPT_OUT_ENV  # DDPM_NO_XLA_CPU_FLAGS.
REEXEC_MARK_ENV = "DDPM_TCMALLOC_REEXEC"
LIBRARY_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
                "/usr/lib", "/usr/local/lib", "/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu")
# tcmalloc prints a line for every allocation above this many bytes (default 1 GiB: the
# evaluation's feature matrices); ddpm's logs say what matters.
_QUIET_LARGE_ALLOCS = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}


def find_tcmalloc(dirs: Sequence[str] = LIBRARY_DIRS,
                  names: Sequence[str] = LIBRARY_NAMES) -> str | None:
  """The path of the first tcmalloc library in `dirs` (names in order of preference), or None."""
  for name in names:
    for d in dirs:
      path = os.path.join(d, name)
      if os.path.isfile(path):
        return path
  return None


def preload_env(environ: Mapping[str, str], library: str | None, platform: str,
                accelerator_installed: bool) -> dict[str, str] | None:
  """The environment to re-execute with under `library`, or None to run as is (pure).

  None when not on Linux, when opted out, when no library was found, when JAX is not meant
  for the CPU (an accelerator plugin without JAX_PLATFORMS=cpu, or JAX_PLATFORMS without
  "cpu"), when LD_PRELOAD is already set, or when this process is the re-executed one.
  Otherwise a copy of `environ` with LD_PRELOAD=`library` and the re-execution mark set.
  """
  if (not platform.startswith("linux") or library is None
      or any(xla_flags.is_set(environ, k)
             for k in (OPT_OUT_ENV, ALL_CPU_LEVERS_OPT_OUT_ENV, REEXEC_MARK_ENV))
      or environ.get("LD_PRELOAD", "").strip()
      or not xla_flags.jax_runs_on_cpu(environ, accelerator_installed)):
    return None
  return {**_QUIET_LARGE_ALLOCS, **environ, "LD_PRELOAD": library, REEXEC_MARK_ENV: "1"}


def is_the_command_line(main_module, argv: Sequence[str], orig_argv: Sequence[str],
                        inspect: bool = False) -> bool:
  """Whether this process is `python [opts] -m ddpm.main ARGS` or the `ddpm` script with ARGS,
  as the interpreter was started (re-running `orig_argv` would run the same thing again)."""
  if inspect or not argv or len(orig_argv) <= len(argv):
    return False
  head = len(orig_argv) - len(argv)  # orig_argv[:head]: the interpreter and its options.
  if "-c" in orig_argv[1:head] or "-" in orig_argv[1:head]:
    return False
  if list(orig_argv[head + 1:]) != list(argv[1:]):
    return False  # Someone rewrote sys.argv before calling run().
  spec = getattr(main_module, "__spec__", None)
  if spec is not None and spec.name == "ddpm.main":
    return orig_argv[head] == "ddpm.main" and orig_argv[head - 1] == "-m"
  return os.path.basename(argv[0]) == "ddpm" and orig_argv[head] == argv[0]


def running_allocator(maps_path: str = "/proc/self/maps") -> str | None:
  """The tcmalloc library mapped into this process, or None (glibc's malloc)."""
  try:
    with open(maps_path) as f:
      for line in f:
        if "tcmalloc" in line:
          return line.split()[-1]
  except OSError:
    pass
  return None


def _flush(*streams) -> None:
  for stream in streams:
    try:
      if stream is not None:
        stream.flush()
    except (OSError, ValueError):
      pass


def reexec_under_tcmalloc() -> str | None:
  """Replaces this process by the same command under tcmalloc when `is_the_command_line` and
  `preload_env` say so (it never returns then). Otherwise returns a line for the log when only
  the missing library stood in the way, or the exec failed; else None."""
  if not is_the_command_line(sys.modules.get("__main__"), sys.argv, getattr(sys, "orig_argv", []),
                             bool(sys.flags.inspect)):
    return None
  library = find_tcmalloc()
  # With a stand-in name when none is installed: would it apply if one were?
  env = preload_env(os.environ, library or "tcmalloc", sys.platform,
                    xla_flags.accelerator_installed())
  if env is None:
    return None
  if library is None:
    return ("No tcmalloc library found: on CPU, training runs ~1.27x faster under it "
            "(Debian/Ubuntu: apt install libtcmalloc-minimal4); DDPM_NO_TCMALLOC=1 silences this.")
  _flush(sys.stdout, sys.stderr)
  try:
    os.execve(sys.executable, list(sys.orig_argv), env)
  except OSError as e:
    return f"Could not re-execute under {library} ({e}); running with glibc's malloc."
