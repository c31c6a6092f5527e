"""ddpm.main's logging after a refused checkpoint write: orbax's and asyncio's background
errors are one line each, TensorStore's 'Event loop is closed' callback tracebacks are dropped,
and every other exception still prints its traceback."""

import subprocess
import sys

CODE = r"""
import asyncio, gc, sys, threading
from absl import logging
from ddpm import main
logging.use_absl_handler()
main.quiet_logging()

async def boom():
  raise ValueError("OUT_OF_RANGE: Failed writing: File too large [os_error_code='27']")

async def run():
  asyncio.ensure_future(boom())  # Never retrieved: asyncio logs it with its traceback.
  await asyncio.sleep(0.01)

loop = asyncio.new_event_loop()
loop.run_until_complete(run())
loop.close()
gc.collect()

class Unraisable:  # What a C callback's failure looks like: sys.unraisablehook.
  def __del__(self):
    raise RuntimeError("Event loop is closed")
Unraisable()
gc.collect()
try:
  raise RuntimeError("Event loop is closed")
except RuntimeError:
  sys.excepthook(*sys.exc_info())
print("went on", flush=True)
raise KeyError("a real bug")
"""


def test_background_write_errors_are_one_line_and_real_errors_keep_their_traceback():
  r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
  assert "went on" in r.stdout and r.returncode != 0
  lines = r.stderr.splitlines()
  assert [l for l in lines if "Task exception was never retrieved" in l], r.stderr
  assert "Event loop is closed" not in r.stderr and "OUT_OF_RANGE" not in r.stderr, r.stderr
  # The one traceback left is the real bug's.
  assert r.stderr.count("Traceback") == 1 and lines[-1] == "KeyError: 'a real bug'", r.stderr
