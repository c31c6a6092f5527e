"""Autoguidance in the jobs (config.sampling.autoguidance_weight, guide_step): a run's earlier
checkpoint guides a later one in --mode=sample; its bad inputs are one-line errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from ddpm.jobs import config_validation, denoise as denoise_job, restore, sample as sample_job
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
    ({"autoguidance_weight": 1.0, "guide_step": 1, "pretrained": "model.safetensors"},
     r"^config.sampling.autoguidance_weight needs the guide's checkpoint in the workdir; it "
     r"cannot be used with config.sampling.pretrained"),
])
def test_bad_autoguidance_values_are_one_line_errors(sampling, match):
  with pytest.raises(ValueError, match=match) as e:
    config_validation.validate_config(config(**sampling))
  assert "\n" not in str(e.value)


def test_a_missing_guide_checkpoint_and_an_editing_mode_are_one_line_errors(workdir):
  with pytest.raises(ValueError, match=r"^config.sampling.guide_step=7: checkpoint step 7 is not "
                                       r"in .*; available: \[1, 2\]\.$"):
    sample_job.SampleJob.setup(config(autoguidance_weight=1.0, guide_step=7), str(workdir))
  with pytest.raises(ValueError, match=r"^config.sampling.autoguidance_weight=1.0: autoguidance "
                                       r"is for --mode=sample, eval and synthesize; allowed here: "
                                       r"0\.$"):
    denoise_job.DenoiseJob.setup(config(autoguidance_weight=1.0, guide_step=1), str(workdir))
