"""Class-conditional jobs on a saved tiny checkpoint: guided sampling, synthetic datasets,
anomaly scores, and their bad inputs."""

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddpm.data import input_pipeline
from ddpm.jobs import anomaly, config_validation, sample as sample_job, synthesize
from ddpm.runtime import checkpointing
from tiny_state import tiny_conditional_state, tiny_state

HAVE_MNIST = (pathlib.Path(os.environ.get("TFDS_DATA_DIR", "/nonexistent")) / "mnist").is_dir()


def _save(path, state, meta):
  manager = checkpointing.create_manager(str(path), max_to_keep=None)
  checkpointing.save(manager, 1, state.replace(step=jnp.asarray(1, jnp.int32)), meta)
  manager.wait_until_finished()
  manager.close()
  return path


@pytest.fixture(scope="module")
def cond_workdir(tmp_path_factory):
  """Checkpoint 1 of the conditional tiny model, parameters moved off their initialization so
  that the output depends on the label."""
  _, _, _, _, state, meta = tiny_conditional_state()
  leaves, tree = jax.tree_util.tree_flatten(state.ema_params)
  keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
  moved = jax.tree_util.tree_unflatten(
      tree, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
  return _save(tmp_path_factory.mktemp("cond"), state.replace(ema_params=moved), meta)


def cond_config(**sampling):
  c, *_ = tiny_conditional_state()
  c = c.copy_and_resolve_references()
  c.sampling.num_samples, c.sampling.batch_size, c.sampling.num_steps = 20, 20, 3
  for k, v in sampling.items():
    c.sampling[k] = v
  return c


def test_sample_job_draws_the_requested_class_or_one_row_per_class(cond_workdir):
  one = sample_job.SampleJob.setup(cond_config(class_label=3, guidance_weight=2.0),
                                   str(cond_workdir)).run()
  assert one["npz"].endswith("ddim3_eta0_w2_class3_seed0_step1.npz")
  with np.load(one["npz"]) as f:
    np.testing.assert_array_equal(f["labels"], np.full(20, 3))
    assert float(f["guidance_weight"]) == 2.0 and f["images"].shape == (20, 16, 16, 1)
  rows = sample_job.SampleJob.setup(cond_config(), str(cond_workdir)).run()
  np.testing.assert_array_equal(rows["labels"], np.repeat(np.arange(10), 2))
  # The same key with another label gives another image; the label matters.
  assert np.any(rows["images"][6:8] != one["images"][6:8])
  np.testing.assert_array_equal(rows["images"][6:8].shape, (2, 16, 16, 1))


@pytest.mark.parametrize("model_classes,key,value,match", [
    (10, "class_label", 10, r"class_label=10 is out of range for a model of 10 classes; "
                            r"allowed: 0..9, or -1"),
    (0, "guidance_weight", 1.5, r"guidance_weight=1.5 needs a class-conditional model"),
    (0, "class_label", 2, r"class_label=2 asks for a class from an unconditional model"),
    (10, "guidance_weight", -3.0, r"guidance_weight=-3.0 must be >= -1"),
])
def test_bad_class_and_guidance_values_are_one_line_errors(model_classes, key, value, match):
  c = (tiny_conditional_state() if model_classes else tiny_state())[0].copy_and_resolve_references()
  c.sampling[key] = value
  with pytest.raises(ValueError, match=match) as e:
    config_validation.validate_config(c)
  assert "\n" not in str(e.value)


@pytest.mark.skipif(not HAVE_MNIST, reason="needs the prepared MNIST in TFDS_DATA_DIR")
def test_synthesize_writes_an_npz_and_a_tfds_dataset_that_training_reads(cond_workdir, tmp_path):
  import tensorflow_datasets as tfds
  c = cond_config()
  c.synthesize.num_per_class, c.synthesize.out_dir = 3, str(tmp_path)
  out = synthesize.SynthesizeJob.setup(c, str(cond_workdir)).run()
  with np.load(out["npz"]) as f:
    images, labels = f["images"], f["labels"]
  assert images.shape == (30, 16, 16, 1) and images.dtype == np.uint8
  np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 3))
  ds = list(tfds.as_numpy(tfds.load("mnist_synthetic", data_dir=str(tmp_path / "tfds"),
                                    split="train", shuffle_files=False)))
  np.testing.assert_array_equal(np.stack([e["image"] for e in ds]), images)
  np.testing.assert_array_equal([e["label"] for e in ds], labels)
  # Training's input pipeline reads it like any dataset.
  t = cond_config().copy_and_resolve_references()
  t.data.dataset, t.data.data_dir, t.data.shuffle_buffer_size = "mnist_synthetic", str(tmp_path / "tfds"), 30
  t.data.resize_method, t.training.batch_size = "none", 8
  batch = next(input_pipeline.create_train_iterator(t))
  assert batch["image"].shape == (4, 2, 16, 16, 1) and batch["label"].max() <= 9
  # Never overwritten: a second run stops before any work.
  with pytest.raises(ValueError, match="already exists") as e:
    synthesize.SynthesizeJob.setup(c, str(cond_workdir))
  assert "\n" not in str(e.value)


def test_synthesize_needs_a_conditional_model(tmp_path):
  c, _, _, _, state, meta = tiny_state()
  c = c.copy_and_resolve_references()
  c.synthesize.out_dir = str(tmp_path)
  with pytest.raises(ValueError, match="needs a class-conditional model"):
    synthesize.SynthesizeJob.setup(c, str(tmp_path))


@pytest.mark.skipif(not HAVE_MNIST, reason="needs the prepared MNIST in TFDS_DATA_DIR")
def test_anomaly_job_scores_both_sets_and_writes_the_aurocs(cond_workdir, tmp_path):
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "noise.npz", images=rng.integers(0, 256, (12, 16, 16, 1), dtype=np.uint8))
  c = cond_config().copy_and_resolve_references()
  a = c.anomaly
  a.anomalous, a.num_images, a.timesteps, a.num_draws = str(tmp_path / "noise.npz"), 12, (5, 50), 1
  a.bpd_num_strata, a.batch_size = 4, 8
  out = anomaly.AnomalyJob.setup(c, str(cond_workdir)).run()
  assert out["num_normal"] == out["num_anomalous"] == 12
  for name in ("denoise", "bpd"):
    assert 0.0 <= out[name]["auroc"] <= 1.0
  assert set(out["denoise"]["auroc_per_timestep"]) == {5, 50}
  assert os.path.exists(out["json"]) and os.path.exists(out["png"])
  with np.load(out["npz"]) as f:
    assert f["denoise_normal"].shape == (12, 2) and f["bpd_anomalous"].shape == (12,)


@pytest.mark.parametrize("key,value,match", [
    ("scores", "denoise,psnr", "allowed: a comma-separated list of denoise, bpd"),
    ("timesteps", (5, 100), r"timesteps=\(5, 100\) must be time steps in 0..99"),
    ("num_draws", 0, "num_draws=0 must be a positive integer"),
    ("anomalous", "", "anomalous is empty"),
])
def test_bad_anomaly_values_are_one_line_errors(key, value, match):
  c = cond_config().copy_and_resolve_references()
  c.anomaly.timesteps = (5, 50)  # The default (up to 700) is for T = 1000; tiny has T = 100.
  c.anomaly[key] = value
  with pytest.raises(ValueError, match=match) as e:
    anomaly.validate_anomaly_config(c)
  assert "\n" not in str(e.value)
