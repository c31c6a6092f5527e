"""Writes the storage refuses: a full disk, a quota, an I/O error, a read-only filesystem.

`storage_error` recognises them whatever type they arrive in (an OSError, or TensorStore's and
orbax's wrappers around one), and `WriteError` is the one-line error a job raises when a result
it must keep (a checkpoint, a final .npz, an eval JSON) could not be written. Results a person
only looks at (sample grids, figures, log lines) are warnings instead: a failed image write
must not end a long run.
"""

from __future__ import annotations

import errno
import os

STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES,
                  errno.EPERM)
_MESSAGES = tuple(os.strerror(n) for n in STORAGE_ERRNOS)


class WriteError(RuntimeError):
  """A result that must be kept could not be written; the message says what is intact."""


def storage_error(error: BaseException) -> str | None:
  """The reason, e.g. 'No space left on device', if `error` (or what it was raised from) is the
  storage refusing a write; None for any other error."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
      return error.strerror or os.strerror(error.errno)
    text = str(error).lower()
    for message in _MESSAGES:
      if message.lower() in text:
        return message
    error = error.__cause__ or error.__context__
  return None


def write_atomically(path: str, write) -> str:
  """Calls write(f) on a binary file that becomes `path` only once complete (a temporary name,
  fsync, rename), so `path` is always either the whole new file or what it was before; on any
  error the temporary file is removed and the error raised."""
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path
