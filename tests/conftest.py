"""Test setup: 4 forced CPU devices (before jax is imported), the offline TFDS data dir and a
per-session XLA compilation cache."""

import atexit
import os
import pathlib
import shutil
import sys
import tempfile

# The cheapest code generation (LLVM at -O0, as test_multiprocess and test_notebook already
# use): the tests' programs are tiny, so XLA's compile time is most of the suite's time, and
# -O0 compiles the tiny U-Net ~2.5x faster (test_unet's two shapes: 30 s against 78 s on the
# 2-core CI machine). Convolutions and dots still run in their libraries (YNNPACK, Eigen,
# oneDNN); every test compares runs under the same flags, and tests/runtime/test_xla_flags.py
# checks ddpm's own CPU flags against none.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4 "
                      "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A fresh persistent XLA compilation cache for this session, removed at exit and inherited by
# the `python -m ddpm.main` subprocesses: the many runs of configs/tiny.py compile the same
# programs (train step, sampler) once instead of once per run. XLA flags are part of its key.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _xla_cache = tempfile.mkdtemp(prefix="ddpm-tests-xla-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _xla_cache
  atexit.register(shutil.rmtree, _xla_cache, ignore_errors=True)
REPO = pathlib.Path(__file__).resolve().parents[1]
_shared = REPO.parent / "shared" / "data" / "tensorflow_datasets"
if "TFDS_DATA_DIR" not in os.environ and _shared.is_dir():
  os.environ["TFDS_DATA_DIR"] = str(_shared)
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))  # `from configs import ...`
TESTS = str(REPO / "tests")
if TESTS not in sys.path:
  sys.path.insert(0, TESTS)  # `from tiny_state import ...` in tests/<layer>/.

import ddpm  # noqa: E402,F401  (adds its XLA CPU flags before anything initialises JAX)

import hypothesis  # noqa: E402

hypothesis.settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True)
hypothesis.settings.load_profile("ci")

# Seconds each of the slowest test files takes on the 2-core CI machine (pytest --durations,
# summed per file). They run first, longest first, so that with `-n 2 --dist loadfile` the two
# workers finish together (longest-processing-time-first scheduling): xdist otherwise orders the
# files by their number of tests, which left one worker idle for minutes at the end.
SLOW_FILES = {
    "tests/test_end_to_end.py": 380, "tests/runtime/test_reliability.py": 380,
    "tests/test_own_data.py": 135, "tests/test_multiprocess.py": 110,
    "tests/jobs/test_autoguidance.py": 95, "tests/test_notebook.py": 82,
    "tests/training/test_mixed_precision.py": 75, "tests/training/test_finetune.py": 60,
    "tests/diffusion/test_solvers.py": 55, "tests/models/test_unet.py": 45,
    "tests/training/test_train.py": 40, "tests/jobs/test_conditional_jobs.py": 40,
    "tests/diffusion/test_guidance.py": 30, "tests/diffusion/test_likelihood.py": 30,
}


def pytest_configure(config):
  if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order below.
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
  def seconds(item):
    return SLOW_FILES.get(pathlib.Path(str(item.fspath)).relative_to(REPO).as_posix(), 0)
  items.sort(key=lambda item: -seconds(item))  # Stable: each file's tests keep their order.
