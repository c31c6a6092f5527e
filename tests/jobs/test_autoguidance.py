"""Autoguidance in the jobs (config.sampling.autoguidance_weight, guide_step): a run's earlier
checkpoint guides a later one in --mode=sample; its bad inputs are one-line errors."""

import logging
import os
import pathlib
import shutil

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


def test_a_guide_of_several_checkpoints_is_the_mean_of_their_parameters(workdir):
  """guide_average_steps: the guide is (theta_1 + theta_2) / 2 of the EMA (or raw) parameters,
  whichever of the steps guide_step names, and sampling names all of them."""
  for use_ema in (True, False):
    _, p1, _ = restore.restore_params(config(checkpoint_step=1, use_ema=use_ema), str(workdir))
    _, p2, _ = restore.restore_params(config(checkpoint_step=2, use_ema=use_ema), str(workdir))
    for step, average in ((1, (2,)), (2, (1, 2))):
      got = restore.restore_guide_params(config(
          autoguidance_weight=1.0, guide_step=step, guide_average_steps=average,
          guide_use_ema=use_ema), str(workdir))
      jax.tree_util.tree_map(
          lambda g, a, b: np.testing.assert_allclose(g, (a + b) / 2, rtol=1e-6, atol=1e-7),
          got, p1, p2)
  out = sample_job.SampleJob.setup(config(autoguidance_weight=1.0, guide_step=1,
                                          guide_average_steps=(2,)), str(workdir)).run()
  assert out["npz"].endswith("_ag1_guide1+2_seed0_step2.npz")
  with pytest.raises(ValueError, match=r"^config.sampling.guide_average_steps=\(7,\) \(step 7\): "
                                       r"checkpoint step 7 is not in .*; available: \[1, 2\]\. "
                                       r"A guide of the guide_step checkpoint alone: "
                                       r"config\.sampling\.guide_average_steps=\(\); sampling "
                                       r"without autoguidance: config\.sampling\."
                                       r"autoguidance_weight=0\.$"):
    restore.restore_guide_params(config(autoguidance_weight=1.0, guide_step=1,
                                        guide_average_steps=(7,)), str(workdir))


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
    ({"autoguidance_weight": 1.0, "guide_step": 1, "guide_average_steps": (500, -1)},
     r"^config.sampling.guide_average_steps=\(500, -1\) must be a tuple of checkpoint steps "),
    ({"guide_average_steps": (True,)},
     r"^config.sampling.guide_average_steps=\(True,\) must be a tuple of checkpoint steps "),
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
      autoguidance_weight=1.0, guide_step=1, guide_average_steps=[], guide_use_ema=True,
      guide_t_min=0, guide_t_max=-1)
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


def test_an_exported_averaged_guide_is_the_mean_and_its_file_says_so(workdir):
  c = config(autoguidance_weight=1.0, guide_step=1, guide_average_steps=(2,))
  c.export.path = str(workdir / "averaged" / "model.safetensors")
  exported = jobs.setup_job("export", c, str(workdir)).run()
  assert exported["settings"]["autoguidance"]["guide_average_steps"] == [2]
  m = pretrained.load_pretrained(exported["path"])
  want = restore.restore_guide_params(c, str(workdir))
  jax.tree_util.tree_map(np.testing.assert_array_equal, m.guide_params, want)
  assert m.config.sampling.guide_average_steps == (2,)
  loaded = pretrained.config_with_settings(config(), exported["settings"])
  assert (loaded.sampling.guide_step, loaded.sampling.guide_average_steps) == (1, (2,))


@pytest.mark.skipif(
    not (pathlib.Path(os.environ.get("TFDS_DATA_DIR", "/nonexistent")) / "mnist").is_dir(),
    reason="needs the prepared MNIST in TFDS_DATA_DIR")
def test_a_run_resumed_without_its_guide_checkpoints_says_so_and_grids_unguided(
    workdir, tmp_path, caplog):
  """A workdir trained before its guide checkpoints were asked for (only step 2 here): the
  restart warns, naming the missing step, and its grids stay unguided instead of failing."""
  shutil.copytree(workdir / "checkpoints" / "2", tmp_path / "checkpoints" / "2")
  c = config(autoguidance_weight=1.0, guide_step=1)
  c.training.num_train_steps = 3
  with caplog.at_level(logging.WARNING):
    trainer = train_job.Trainer.setup(c, str(tmp_path))
  try:
    assert trainer.start_step == 2
    assert "Autoguidance needs checkpoint(s) 1 (" in caplog.text and "(saved: 2)" in caplog.text
    assert trainer._grid_guide(None, 3) is None and trainer.guide_replicated is False
  finally:
    trainer.manager.close()
    if trainer.lock is not None:
      trainer.lock.release()


@pytest.mark.parametrize("every,keep_every,keep,guide_step,average", [
    (2, 4, 1, 4, ()), (2, 0, 1, 6, ()), (2, 0, 2, 4, (1, 3, 5)), (3, 6, 1, 4, (2, 8)),
    (2, 6, 2, 6, (4,)), (1, 0, 1, 3, (2,))])
def test_a_run_saves_and_keeps_every_guide_checkpoint_and_retention_is_otherwise_unchanged(
    tmp_path, every, keep_every, keep, guide_step, average):
  """Checkpoints saved as the trainer saves them (`train.saves_checkpoint`, a manager with the
  run's keep_checkpoints, checkpoint_every_steps, keep_every_steps and the guide's steps) over
  a run long enough for the guide's checkpoints to age out of the newest ones: every guide
  checkpoint is there at the end, whether or not checkpoint_every_steps divides it, and the
  others are exactly the newest `keep` and the multiples of keep_every_steps."""
  c = ml_collections.ConfigDict(dict(
      training=dict(checkpoint_every_steps=every, keep_every_steps=keep_every,
                    keep_checkpoints=keep),
      sampling=dict(autoguidance_weight=1.0, guide_step=guide_step, guide_average_steps=average)))
  guide = train_job.guide_checkpoint_steps(c)
  assert guide == tuple(sorted({guide_step, *average}))
  _, _, _, _, state, meta = tiny_state()
  manager = checkpointing.create_manager(str(tmp_path), keep, every, keep_every, keep_steps=guide)
  last = max(guide) + (keep + 2) * every
  saved = []
  for step in range(1, last + 1):
    if train_job.saves_checkpoint(step, c, last=step == last):
      saved.append(step)
      checkpointing.save(manager, step, state.replace(step=jnp.asarray(step, jnp.int32)), meta,
                         force=True)
  checkpointing.wait_until_finished(manager)
  kept = sorted(manager.all_steps())
  manager.close()
  assert set(guide) <= set(saved)
  assert kept == sorted(set(saved[-keep:]) | set(guide) |
                        {s for s in saved if keep_every and s % keep_every == 0})
