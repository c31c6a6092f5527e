"""Test setup: 4 forced CPU devices (before jax is imported) and the offline TFDS data dir."""

import os
import pathlib
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
_shared = REPO.parent / "shared" / "data" / "tensorflow_datasets"
if "TFDS_DATA_DIR" not in os.environ and _shared.is_dir():
  os.environ["TFDS_DATA_DIR"] = str(_shared)
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))  # `from configs import ...`

import hypothesis  # noqa: E402

hypothesis.settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True)
hypothesis.settings.load_profile("ci")
