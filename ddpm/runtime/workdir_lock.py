"""One training run per workdir: an exclusive lock on `workdir/train.lock`.

A run holds an `fcntl.flock` on the file for as long as it trains, and writes its holder into
it (host, pid, start time, a run id). The kernel drops the lock when the holder's process ends
in any way (exit, crash, SIGKILL), so a second run on the same workdir is refused exactly while
the first one lives, and a lock left behind by a dead run (the file still names it) is taken
over with a warning. `flock` works on local filesystems and, on Linux, on NFS (where it is
emulated with POSIX byte-range locks).

Only training writes checkpoints, so only training takes the lock; the read-only modes read
the newest complete checkpoint and never touch it. Within one process, taking the lock of a
workdir it already holds (a notebook cell run twice) replaces the earlier hold.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid

from absl import logging

try:
  import fcntl  # POSIX only.
except ImportError:  # pragma: no cover (Windows)
  fcntl = None

LOCK_NAME = "train.lock"
_HELD: dict[str, "WorkdirLock"] = {}  # realpath of the lock file -> this process's lock.


class WorkdirLockedError(RuntimeError):
  """Another live process trains in this workdir."""


def _describe(holder: dict) -> str:
  since = holder.get("start_time")
  since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "an unknown time"
  return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {since}"


def _read_holder(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  raw = b""
  while chunk := os.read(fd, 65536):
    raw += chunk
  try:
    holder = json.loads(raw.decode() or "{}")
  except (UnicodeDecodeError, json.JSONDecodeError):
    return {"unreadable": raw[:80].decode(errors="replace")}
  return holder if isinstance(holder, dict) else {}


class WorkdirLock:
  """The held lock of one workdir; `release()` (or process exit) frees it."""

  def __init__(self, path: str, fd: int, holder: dict):
    self.path, self._fd, self.holder = path, fd, holder

  @property
  def held(self) -> bool:
    return self._fd is not None

  def release(self) -> None:
    """Empties the holder record (a clean stop) and drops the lock."""
    if self._fd is None:
      return
    try:
      os.ftruncate(self._fd, 0)
    except OSError:  # A full or read-only disk: the lock still drops with the descriptor.
      pass
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None
    if _HELD.get(self.path) is self:
      del _HELD[self.path]

  def __enter__(self) -> "WorkdirLock":
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def acquire(workdir: str, run_id: str | None = None) -> WorkdirLock | None:
  """Takes the exclusive training lock of `workdir` (an existing directory).

  Raises WorkdirLockedError, one line naming the holder, if another live process holds it.
  A record left by a process that no longer holds the lock is taken over with a warning.
  Returns None where the platform has no `fcntl` (then nothing is locked).
  """
  if fcntl is None:  # pragma: no cover
    logging.warning("No fcntl on this platform: %s is not locked against a second run.", workdir)
    return None
  path = os.path.realpath(os.path.join(workdir, LOCK_NAME))
  earlier = _HELD.get(path)
  if earlier is not None:  # This process already holds it: replace that hold.
    logging.info("This process already holds %s; taking it again for the new run.", path)
    earlier.release()
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
  except OSError as e:
    raise WorkdirLockedError(f"cannot open the workdir lock {path} ({e.strerror}).") from None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = _read_holder(fd)
    os.close(fd)
    raise WorkdirLockedError(
        f"workdir {os.path.dirname(path)} is being trained by {_describe(holder)}"
        f"{' (run ' + holder['run_id'] + ')' if holder.get('run_id') else ''}; stop it or use "
        "another --workdir.") from None
  except OSError as e:  # E.g. ENOLCK on a filesystem without locks.
    os.close(fd)
    raise WorkdirLockedError(f"cannot lock {path} ({e.strerror}); use a --workdir on a "
                             "filesystem with file locks.") from None
  stale = _read_holder(fd)
  if stale:
    logging.warning("Took over the lock of %s: it was left by %s, which no longer runs "
                    "(killed or crashed); its checkpoints are resumed as usual.",
                    os.path.dirname(path), _describe(stale))
  holder = {"host": socket.gethostname(), "pid": os.getpid(), "start_time": time.time(),
            "run_id": run_id or uuid.uuid4().hex[:12]}
  try:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(holder).encode())
    os.fsync(fd)
  except OSError as e:  # A full disk: the lock holds all the same, unnamed.
    logging.warning("Could not record this run in %s (%s); the lock holds all the same.", path,
                    e.strerror)
  lock = WorkdirLock(path, fd, holder)
  _HELD[path] = lock
  return lock
