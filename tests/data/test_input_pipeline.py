"""The tf.data pipeline on tfds' mock data: shapes, range, epochs, exact resume, errors."""

import itertools
import os
import pathlib
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import tiny
from ddpm.data import input_pipeline

N = 100  # Mock examples in the split.


def _config(**data):
  c = tiny.get_config()
  c.data.data_dir = ""
  c.data.update(data)
  return c


@pytest.fixture()
def mock_mnist(monkeypatch):
  # Mock data needs no download: the no-network check (a real DNS lookup) does not apply.
  monkeypatch.setattr(input_pipeline, "download_host_unreachable", lambda: None)
  with tfds.testing.mock_data(num_examples=N):
    yield


def _take(config, start, n):
  return list(itertools.islice(input_pipeline.create_train_iterator(config, start), n))


def test_batches_are_sharded_over_devices_and_scaled(mock_mnist):
  c = _config()
  b = _take(c, 0, 1)[0]
  n = jax.local_device_count()
  assert b["image"].shape == (n, 32 // n, 16, 16, 1) and b["image"].dtype == np.float32
  assert b["label"].shape == (n, 32 // n) and b["label"].dtype == np.int32
  assert b["image"].min() >= -1.0 and b["image"].max() <= 1.0


def test_each_epoch_is_a_permutation_and_resume_is_exact(mock_mnist):
  c = _config(resize_method="pad", image_size=32)
  batches = _take(c, 0, 7)  # 7 * 32 = 224 examples: epoch 0, 1 and part of 2.
  flat = np.concatenate([b["image"].reshape(32, -1) for b in batches])
  epoch0, epoch1 = flat[:N], flat[N:2 * N]
  assert len({x.tobytes() for x in epoch0}) == N  # No example twice within an epoch.
  assert {x.tobytes() for x in epoch0} == {x.tobytes() for x in epoch1}
  assert not np.array_equal(epoch0, epoch1)  # Reshuffled each epoch.
  # Every example carries its index in the split: each epoch is a permutation of 0..N-1.
  index = np.concatenate([b["index"].ravel() for b in batches])
  assert batches[0]["index"].shape == batches[0]["label"].shape and index.dtype == np.int32
  assert sorted(index[:N]) == sorted(index[N:2 * N]) == list(range(N))
  # Padding to 32 puts 2 rows of black (-1) above and below each 28x28 image.
  assert np.all(batches[0]["image"][..., :2, :, :] == -1.0)
  for start in (1, 3, 4):  # Resume inside and across epoch boundaries.
    resumed = _take(c, start, 2)
    for a, b in zip(batches[start:start + 2], resumed):
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(a["label"], b["label"])


def test_random_flips_are_deterministic_and_happen(mock_mnist):
  c = _config(random_flip=True)
  a, b = _take(c, 0, 2), _take(c, 0, 2)
  np.testing.assert_array_equal(a[1]["image"], b[1]["image"])
  plain = _take(_config(random_flip=False), 0, 2)
  same = [np.array_equal(x, y) for x, y in zip(
      np.concatenate([p["image"].reshape(32, 16, 16) for p in plain]),
      np.concatenate([p["image"].reshape(32, 16, 16) for p in a]))]
  assert 0 < sum(same) < len(same)  # Some examples flipped, some not.
  flipped = [x[:, ::-1] for x, s in zip(np.concatenate([p["image"].reshape(32, 16, 16) for p in plain]), same) if not s]
  got = [y for y, s in zip(np.concatenate([p["image"].reshape(32, 16, 16) for p in a]), same) if not s]
  np.testing.assert_array_equal(flipped, got)


def test_bad_inputs_give_one_line_errors(mock_mnist):
  cases = [
      (_config(dataset="no_such_dataset"), "config.data.dataset='no_such_dataset'"),
      (_config(channels=3), "config.data.channels=3"),
      (_config(resize_method="none"), "resize_method='none'"),
  ]
  for config, match in cases:
    with pytest.raises(ValueError, match=match) as e:
      _take(config, 0, 1)
    assert "\n" not in str(e.value)
  c = _config()
  c.training.batch_size = 30  # Not a multiple of 4 devices.
  with pytest.raises(ValueError, match="batch_size=30"):
    _take(c, 0, 1)


def test_data_dir_falls_back_to_the_environment(monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", "/some/dir")
  assert input_pipeline.data_dir_from_config(_config().data) == "/some/dir"
  assert input_pipeline.data_dir_from_config(_config(data_dir="/mine").data) == "/mine"
  monkeypatch.delenv("TFDS_DATA_DIR")
  assert input_pipeline.data_dir_from_config(_config().data) is None


def test_a_missing_dataset_offline_says_to_set_tfds_data_dir(tmp_path, monkeypatch):
  def offline(self, *args, **kwargs):
    raise ConnectionError("Failed to establish a new connection: [Errno 101] Network is unreachable")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
  monkeypatch.setattr(input_pipeline, "download_host_unreachable", lambda: None)  # A proxy.
  c = _config(data_dir=str(tmp_path))
  builder = input_pipeline.get_builder(c.data)
  with pytest.raises(RuntimeError, match="set TFDS_DATA_DIR") as e:
    input_pipeline.ensure_prepared(builder, c.data)
  assert "\n" not in str(e.value) and "Network is unreachable" in str(e.value)


def test_a_missing_dataset_without_network_fails_at_once_naming_the_data_dir(monkeypatch):
  """No DNS for the download host (a real lookup of a name that cannot resolve, as on a machine
  without internet): one line naming the data_dir, in seconds instead of minutes of retries."""
  for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setattr(input_pipeline, "DOWNLOAD_HOST", ("no-such-host.invalid", 443))
  c = _config(data_dir="/no/such/dir")
  builder = input_pipeline.get_builder(c.data)
  t0 = time.time()
  with pytest.raises(RuntimeError) as e:
    input_pipeline.ensure_prepared(builder, c.data)
  assert time.time() - t0 < 15
  msg = str(e.value)
  assert "\n" not in msg and "'/no/such/dir', which does not exist" in msg, msg
  assert "no-such-host.invalid:443 unreachable" in msg and "set TFDS_DATA_DIR" in msg


def test_a_conditional_model_needs_enough_classes_in_the_dataset(mock_mnist):
  builder = input_pipeline.get_builder(_config().data)
  input_pipeline.check_labels(builder, _config().data, 0)  # Unconditional: anything goes.
  input_pipeline.check_labels(builder, _config().data, 10)
  input_pipeline.check_labels(builder, _config().data, 12)  # Spare classes are allowed.
  with pytest.raises(ValueError, match=r"num_classes=5 but 'mnist' has 10 classes; allowed: "
                                       r"num_classes >= 10") as e:
    input_pipeline.check_labels(builder, _config().data, 5)
  assert "\n" not in str(e.value)


@pytest.mark.skipif(
    not (pathlib.Path(os.environ.get("TFDS_DATA_DIR", "/nonexistent")) / "mnist").is_dir(),
    reason="needs the prepared MNIST in TFDS_DATA_DIR (mock data has no split sizes)")
@pytest.mark.parametrize("split", ["train", "test[10:90]"])
def test_processes_read_disjoint_contiguous_slices_that_cover_the_split(split):
  """For P processes, process p's slice starts where process p-1's ends (its first index is
  the sizes of processes < p summed), and together they are the whole split, each example once."""
  builder = input_pipeline.get_builder(_config().data)
  total = builder.info.splits[split].num_examples
  for count in (1, 2, 3, 7):
    start = 0
    for p in range(count):
      sub, first = input_pipeline.process_split(builder, split, p, count)
      size = builder.info.splits[sub].num_examples
      assert first == start and abs(size - total / count) < 1
      start += size
    assert start == total
  if total > 1000:
    return
  # What the pipeline reads under one of those splits is exactly that slice of the split.
  sub, first = input_pipeline.process_split(builder, split, 2, 3)
  n = builder.info.splits[sub].num_examples
  read = lambda s: np.stack([ex["image"] for ex in tfds.as_numpy(
      input_pipeline.base_dataset(builder, s, _config().data))])
  np.testing.assert_array_equal(read(sub), read(split)[first:first + n])
