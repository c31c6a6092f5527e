"""What ours.py (the system Python, ddpm) and peers.py (the peers' venv, torch) share: only the
standard library, so it imports in both interpreters (each script's folder is on sys.path)."""

import resource
import sys
import time


def log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def timed(fn) -> float:
  """Wall-clock seconds of one call of fn() (fn must block until its work is done)."""
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def peak_rss_mb() -> tuple[float, float]:
  """(this process, largest waited-for child) peak resident set size in MB (ru_maxrss is KB)."""
  own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
  return own, children
