"""Autoguidance in the jobs (config.sampling.autoguidance_weight, guide_step): a run's earlier
checkpoint guides a later one in --mode=sample; its bad inputs are one-line errors."""

import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import tiny
from ddpm import jobs
from ddpm.pipelines import pretrained
from ddpm.jobs import config_validation, restore, sample as sample_job, train as train_job
from ddpm.runtime import checkpointing
from tiny_state import tiny_state


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """Checkpoints 1 and 2 of the tiny model, with different (moved) EMA and raw parameters."""
  path = tmp_path_factory.mktemp("autoguided")
  _, _, _, _, state, meta = tiny_state()
  manager = checkpointing.create_manager(str(path), max_to_keep=None)
  def moved(params, seed, scale):
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])

  for step, scale in ((1, 0.02), (2, 0.05)):
    checkpointing.save(manager, step, state.replace(
        step=jnp.asarray(step, jnp.int32), ema_params=moved(state.ema_params, step, scale),
        params=moved(state.params, 10 + step, scale)), meta)
  manager.wait_until_finished()
  manager.close()
  return path


def config(**sampling):
  c = tiny.get_config()
  c.sampling.num_samples, c.sampling.batch_size, c.sampling.num_steps = 8, 8, 3
  c.sampling.checkpoint_step = 2
  for k, v in sampling.items():
    c.sampling[k] = v
  return c


def test_a_guide_equal_to_the_model_changes_nothing_and_an_earlier_checkpoint_does(workdir):
  plain = sample_job.SampleJob.setup(config(), str(workdir)).run()
  same = sample_job.SampleJob.setup(config(autoguidance_weight=1.0, guide_step=2),
                                    str(workdir)).run()
  assert same["npz"].endswith("ddim3_eta0_ag1_guide2_seed0_step2.npz")
  with np.load(same["npz"]) as f:  # The settings travel with the images.
    assert (float(f["autoguidance_weight"]), int(f["guide_step"]), bool(f["guide_use_ema"])) == (
        1.0, 2, True)
  # (1 + w) D - w D = D up to float32 rounding, i.e. at most one uint8 level.
  assert np.max(np.abs(same["images"].astype(int) - plain["images"].astype(int))) <= 1
  guided = sample_job.SampleJob.setup(config(autoguidance_weight=1.0, guide_step=1),
                                      str(workdir)).run()
  assert guided["npz"].endswith("_ag1_guide1_seed0_step2.npz")
  assert np.mean(np.abs(guided["images"].astype(int) - plain["images"].astype(int))) > 1.0
  # Guidance limited to time steps the sampler never visits (DDIM 3 of T = 100: 0, 33, 66)
  # leaves the model alone, exactly.
  none = sample_job.SampleJob.setup(config(autoguidance_weight=1.0, guide_step=1, guide_t_min=90),
                                    str(workdir)).run()
  assert none["npz"].endswith("_ag1_guide1_t90-T_seed0_step2.npz")
  np.testing.assert_array_equal(none["images"], plain["images"])


def test_the_guide_is_the_named_checkpoint_ema_or_raw(workdir):
  _, ema1, _ = restore.restore_params(config(checkpoint_step=1), str(workdir))
  _, raw1, _ = restore.restore_params(config(checkpoint_step=1, use_ema=False), str(workdir))
  _, raw2, _ = restore.restore_params(config(checkpoint_step=2, use_ema=False), str(workdir))
  differ = lambda a, b: any(jax.tree_util.tree_leaves(jax.tree_util.tree_map(
      lambda x, y: bool(np.any(x != y)), a, b)))
  assert differ(ema1, raw1) and differ(raw1, raw2)  # So each is told apart below.
  for use_ema, want in ((True, ema1), (False, raw1)):
    got = restore.restore_guide_params(
        config(autoguidance_weight=0.5, guide_step=1, guide_use_ema=use_ema), str(workdir))
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
  assert restore.restore_guide_params(config(guide_step=1), str(workdir)) is None  # w = 0: off.


@pytest.mark.parametrize("sampling,match", [
    ({"autoguidance_weight": float("inf"), "guide_step": 1},
     r"^config.sampling.autoguidance_weight=inf must be finite and >= 0 \(0: off\)\.$"),
    ({"autoguidance_weight": -0.5, "guide_step": 1},
     r"^config.sampling.autoguidance_weight=-0.5 must be finite and >= 0 \(0: off\)\.$"),
    ({"autoguidance_weight": 1.0},
     r"^config.sampling.guide_step=-1 must name the guide's checkpoint step \(>= 0\) when "),
    ({"guide_t_min": 50, "guide_t_max": 10},
     r"^config.sampling.guide_t_min=50, guide_t_max=10: allowed 0 <= guide_t_min <= "
     r"guide_t_max <= \d+ \(T - 1\), or guide_t_max=-1 \(T - 1\)\.$"),
    ({"guide_t_min": 0, "guide_t_max": 10**6},
     r"^config.sampling.guide_t_min=0, guide_t_max=1000000: allowed 0 <= guide_t_min <= "
     r"guide_t_max <= \d+ \(T - 1\), or guide_t_max=-1 \(T - 1\)\.$"),
    ({"guide_t_max": True}, r"^config.sampling.guide_t_max=True must be an integer time step\.$"),
])
def test_bad_autoguidance_values_are_one_line_errors(sampling, match):
  with pytest.raises(ValueError, match=match) as e:
    config_validation.validate_config(config(**sampling))
  assert "\n" not in str(e.value)


def test_a_missing_guide_checkpoint_is_a_one_line_error_naming_the_key(workdir):
  with pytest.raises(ValueError, match=r"^config.sampling.guide_step=7: checkpoint step 7 is not "
                                       r"in .*; available: \[1, 2\]\. Sampling without autoguidance: "
                                       r"config\.sampling\.autoguidance_weight=0\.$"):
    sample_job.SampleJob.setup(config(autoguidance_weight=1.0, guide_step=7), str(workdir))


def test_modes_without_autoguidance_run_without_it_and_export_carries_the_guide(workdir, caplog):
  """A config whose sampler is autoguided (as configs/mnist.py's) runs every mode: the editing
  modes sample with the model alone; --mode=export writes the guide into the file, so that
  sampling from the file is the workdir's guided sampling, bit for bit; a file exported
  without a guide samples with the model alone."""
  c = config(autoguidance_weight=1.0, guide_step=1)
  c.edit.num_images, c.edit.num_steps = 2, 4
  with caplog.at_level(logging.INFO):
    job = jobs.setup_job("denoise", c, str(workdir))
  assert job.config.sampling.autoguidance_weight == 0.0 and c.sampling.autoguidance_weight == 1.0
  assert "Autoguidance (config.sampling.autoguidance_weight=1) is off: --mode=denoise" in caplog.text
  from_workdir = jobs.setup_job("sample", c, str(workdir)).run()

  exported = jobs.setup_job("export", c, str(workdir)).run()
  assert exported["settings"]["autoguidance"] == dict(
      autoguidance_weight=1.0, guide_step=1, guide_use_ema=True, guide_t_min=0, guide_t_max=-1)
  assert "autoguidance_weight" not in exported["settings"]["sampling"]
  _, ema1, _ = restore.restore_params(config(checkpoint_step=1), str(workdir))
  m = pretrained.load_pretrained(exported["path"])
  jax.tree_util.tree_map(np.testing.assert_array_equal, m.guide_params, ema1)
  assert m.config.sampling.autoguidance_weight == 1.0 and m.config.sampling.guide_step == 1
  from_file = c.copy_and_resolve_references()
  from_file.sampling.pretrained, from_file.sampling.guide_step = exported["path"], 7
  job = jobs.setup_job("sample", from_file, str(workdir / "from_file"))
  assert job.config.sampling.guide_step == 1  # The file's guide, whatever the config names.
  np.testing.assert_array_equal(job.run()["images"], from_workdir["images"])

  unguided = jobs.setup_job("export", config(), str(workdir)).run()  # No guide asked for.
  assert "autoguidance" not in unguided["settings"]
  assert pretrained.load_pretrained(unguided["path"]).guide_params is None
  from_file.sampling.pretrained = unguided["path"]
  caplog.clear()
  with caplog.at_level(logging.INFO):
    job = jobs.setup_job("sample", from_file, str(workdir / "from_unguided"))
  assert job.guide_params is None and job.config.sampling.autoguidance_weight == 0.0
  assert "is off: the file was exported without a guide" in caplog.text


@pytest.mark.parametrize("every,keep_every,keep,guide_step", [
    (2, 4, 1, 4), (2, 4, 1, 6), (2, 0, 2, 4), (3, 6, 1, 4), (2, 6, 2, 6), (1, 2, 1, 3)])
def test_the_guide_is_kept_exactly_when_retention_keeps_its_checkpoint(
    tmp_path, every, keep_every, keep, guide_step):
  """Checkpoints saved as the trainer saves them (`checkpointing.create_manager` with the run's
  keep_checkpoints, checkpoint_every_steps and keep_every_steps, a save at every step that is a
  multiple of checkpoint_every_steps) over a run long enough for the guide's checkpoint to age
  out of the newest ones: orbax keeps it iff `guide_checkpoint_kept` says so."""
  training = ml_collections.ConfigDict(dict(checkpoint_every_steps=every,
                                            keep_every_steps=keep_every, keep_checkpoints=keep))
  sampling = ml_collections.ConfigDict(dict(guide_step=guide_step))
  _, _, _, _, state, meta = tiny_state()
  manager = checkpointing.create_manager(str(tmp_path), keep, every, keep_every)
  for step in range(every, guide_step + (keep + 2) * every + 1, every):
    checkpointing.save(manager, step, state.replace(step=jnp.asarray(step, jnp.int32)), meta)
  checkpointing.wait_until_finished(manager)
  kept = guide_step in manager.all_steps()
  manager.close()
  assert train_job.guide_checkpoint_kept(training, sampling) == kept
