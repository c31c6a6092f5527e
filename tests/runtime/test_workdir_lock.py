"""One training run per workdir: the lock is exclusive across processes, dies with its holder,
and a stale record is taken over."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from ddpm.runtime import workdir_lock

HOLD = """
import sys, time
from ddpm.runtime import workdir_lock
lock = workdir_lock.acquire(sys.argv[1], run_id="holder")
print("held", flush=True)
time.sleep(600)
"""
TRY = """
import sys
from ddpm.runtime import workdir_lock
try:
  workdir_lock.acquire(sys.argv[1])
except workdir_lock.WorkdirLockedError as e:
  sys.exit(f"refused: {e}")
print("acquired")
"""


def _python(code, *args, **kwargs):
  return [sys.executable, "-c", code, *args]


def test_a_second_process_is_refused_naming_the_holder_until_the_holder_dies(tmp_path, caplog):
  holder = subprocess.Popen(_python(HOLD, str(tmp_path)), stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    other = subprocess.run(_python(TRY, str(tmp_path)), capture_output=True, text=True, timeout=60)
    assert other.returncode != 0
    message = other.stderr.strip()
    assert message.count("\n") == 0, message
    assert (f"refused: workdir {os.path.realpath(tmp_path)} is being trained by pid {holder.pid} "
            f"on host ") in message and "(run holder); stop it or use another --workdir." in message
    with pytest.raises(workdir_lock.WorkdirLockedError, match=f"pid {holder.pid}"):
      workdir_lock.acquire(str(tmp_path))  # This process too.
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
  # The kernel dropped the lock with the process; its record is still in the file.
  assert json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())["pid"] == holder.pid
  with caplog.at_level(logging.WARNING):
    lock = workdir_lock.acquire(str(tmp_path))
  assert any(f"it was left by pid {holder.pid}" in r.getMessage() and "no longer runs" in r.getMessage()
             for r in caplog.records)
  assert lock.holder["pid"] == os.getpid()
  assert json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())["pid"] == os.getpid()
  lock.release()
  assert (tmp_path / workdir_lock.LOCK_NAME).read_text() == ""  # A clean release: no record.


def test_a_clean_release_is_not_reported_as_stale_and_this_process_may_retake_its_lock(
    tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    first = workdir_lock.acquire(str(tmp_path))
    second = workdir_lock.acquire(str(tmp_path))  # A notebook cell run twice.
    assert not first.held and second.held
    second.release()
    with workdir_lock.acquire(str(tmp_path)) as third:
      assert third.held
    assert not third.held
  assert not [r for r in caplog.records if "Took over" in r.getMessage()]
  t0 = time.time()
  other = subprocess.run(_python(TRY, str(tmp_path)), capture_output=True, text=True, timeout=60)
  assert other.returncode == 0 and "acquired" in other.stdout and time.time() - t0 < 60
