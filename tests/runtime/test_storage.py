"""Which errors are the storage refusing a write (`ddpm.runtime.storage.storage_error`)."""

import errno
import os

from hypothesis import given, settings, strategies as st

from ddpm.runtime import storage

WRAPPERS = st.lists(st.sampled_from([ValueError, RuntimeError, KeyError, Exception]), max_size=4)
OTHER_ERRNOS = [n for n in (errno.ENOENT, errno.EEXIST, errno.EINVAL, errno.ENOTDIR, errno.EAGAIN,
                            errno.ECONNREFUSED) if n not in storage.STORAGE_ERRNOS]


def _chain(inner: BaseException, wrappers, as_cause: bool) -> BaseException:
  """`inner` raised inside len(wrappers) handlers, each raising the next type (from it, or
  during its handling, the two ways Python links exceptions)."""
  exc = inner
  for kind in wrappers:
    outer = kind("wrapped")
    if as_cause:
      outer.__cause__ = exc
    else:
      outer.__context__ = exc
    exc = outer
  return exc


@settings(deadline=None, max_examples=60)
@given(st.sampled_from(storage.STORAGE_ERRNOS), WRAPPERS, st.booleans())
def test_a_refused_write_is_recognised_through_any_chain_of_wrappers(code, wrappers, as_cause):
  exc = _chain(OSError(code, os.strerror(code), "/some/file"), wrappers, as_cause)
  assert storage.storage_error(exc) == os.strerror(code)


@settings(deadline=None, max_examples=60)
@given(st.sampled_from(storage.STORAGE_ERRNOS), st.text(max_size=40), st.text(max_size=40))
def test_tensorstore_style_messages_are_recognised_by_their_strerror(code, before, after):
  """TensorStore reports OS errors inside a ValueError's text (errno as os_error_code)."""
  message = f"OUT_OF_RANGE: {before} Failed writing: {os.strerror(code)} {after}"
  assert storage.storage_error(ValueError(message)) is not None


@settings(deadline=None, max_examples=60)
@given(st.sampled_from(OTHER_ERRNOS), WRAPPERS, st.booleans())
def test_other_errors_are_not_storage_errors(code, wrappers, as_cause):
  exc = _chain(OSError(code, os.strerror(code)), wrappers, as_cause)
  assert storage.storage_error(exc) is None
  assert storage.storage_error(ValueError("shape mismatch")) is None


def test_a_cycle_of_contexts_ends():
  a, b = ValueError("a"), RuntimeError("b")
  a.__context__, b.__context__ = b, a
  assert storage.storage_error(a) is None


@settings(deadline=None, max_examples=40)
@given(st.binary(max_size=2000), st.binary(max_size=2000), st.none() | st.integers(0, 2000))
def test_an_atomic_write_leaves_the_whole_new_file_or_the_old_one(tmp_path_factory, old, new, fail_at):
  """However far the writer gets before it fails, the path holds the old bytes (and no
  temporary file is left); a writer that finishes leaves exactly the new bytes."""
  path = tmp_path_factory.mktemp("atomic") / "file.bin"
  path.write_bytes(old)

  def write(f):
    if fail_at is not None and fail_at <= len(new):
      f.write(new[:fail_at])
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    f.write(new)

  failed = fail_at is not None and fail_at <= len(new)
  try:
    storage.write_atomically(str(path), write)
  except OSError:
    assert failed
  assert path.read_bytes() == (old if failed else new)
  assert [p.name for p in path.parent.iterdir()] == ["file.bin"]
