"""Training: data parallelism is exact, EMA and learning-rate math, checkpoint round trips."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import jax_utils
from hypothesis import given, strategies as st

from configs import tiny
from ddpm.diffusion import schedules
from ddpm.jobs import train as train_job
from ddpm.models import build
from ddpm.runtime import checkpointing, replicas
from ddpm.training import ema, optimizer, train_step
from tiny_state import tiny_state


def _run(devices, state, batches):
  c, model, tx, lr_fn, *_ = tiny_state()
  p = train_step.make_p_train_step(model, schedules.schedule_from_config(c.diffusion), tx, lr_fn, c,
                                   devices=devices)
  rs = jax_utils.replicate(state, devices=devices, axis_name=replicas.AXIS)
  losses = []
  for b in batches:
    sharded = {k: v.reshape((len(devices), -1) + v.shape[1:]) for k, v in b.items()}
    rs, m = p(rs, sharded)
    losses.append(float(m["loss"][0]))
  return replicas.unreplicate(rs), losses


def test_four_devices_train_exactly_like_one_with_the_same_global_batch():
  assert jax.local_device_count() == 4, "conftest forces 4 host devices"
  c, *_, state, _ = tiny_state()
  rng = np.random.default_rng(0)
  batches = [{"image": rng.uniform(-1, 1, (32, 16, 16, 1)).astype(np.float32),
              "label": np.zeros((32,), np.int32)} for _ in range(3)]
  one, l1 = _run(jax.local_devices()[:1], state, batches)
  four, l4 = _run(jax.local_devices(), state, batches)
  np.testing.assert_allclose(l1, l4, rtol=1e-5)
  assert int(one.step) == int(four.step) == 3
  for a, b in zip(jax.tree_util.tree_leaves((one.params, one.ema_params, one.opt_state)),
                  jax.tree_util.tree_leaves((four.params, four.ema_params, four.opt_state))):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
  # The parameters did move, so the comparison is not vacuous.
  moved = jax.tree_util.tree_map(lambda x, y: float(jnp.max(jnp.abs(x - y))), one.params, state.params)
  assert max(jax.tree_util.tree_leaves(moved)) > 1e-4


@given(st.floats(0.0, 0.9999), st.floats(-5, 5), st.floats(-5, 5))
def test_ema_update_is_a_convex_combination(decay, e, p):
  out = ema.ema_update({"w": jnp.float32(e)}, {"w": jnp.float32(p)}, decay)["w"]
  np.testing.assert_allclose(out, decay * e + (1 - decay) * p, rtol=1e-5, atol=1e-5)
  assert min(e, p) - 1e-5 <= float(out) <= max(e, p) + 1e-5


@given(st.integers(0, 10**6))
def test_ema_warmup_never_exceeds_the_decay(step):
  d = float(ema.ema_decay_at(step, 0.999, True))
  assert 0.0 < d <= np.float32(0.999)
  np.testing.assert_allclose(d, min(0.999, (1 + step) / (10 + step)), rtol=1e-6)
  assert float(ema.ema_decay_at(step, 0.999, False)) == pytest.approx(0.999)


def test_learning_rate_warms_up_linearly_then_stays_or_decays():
  c = tiny.get_config()
  c.optim.warmup_steps, c.optim.learning_rate = 100, 1e-3
  lr = optimizer.learning_rate_schedule(c.optim, 1000)
  np.testing.assert_allclose([lr(0), lr(50), lr(100), lr(900)], [0, 5e-4, 1e-3, 1e-3], rtol=1e-6)
  c.optim.lr_schedule = "cosine"
  lr = optimizer.learning_rate_schedule(c.optim, 1000)
  np.testing.assert_allclose([lr(100), lr(550), lr(1000)], [1e-3, 5e-4, 0], rtol=1e-5, atol=1e-9)


def test_checkpoint_round_trip_retention_and_shape_mismatch(tmp_path):
  c, model, tx, _, state, meta = tiny_state()
  manager = checkpointing.create_manager(str(tmp_path), max_to_keep=2)
  assert checkpointing.restore(manager, state, meta) is state  # Nothing to restore yet.
  for step in (1, 2, 3):
    s = state.replace(step=jnp.asarray(step, jnp.int32),
                      params=jax.tree_util.tree_map(lambda x: x + step, state.params))
    checkpointing.save(manager, step, s, meta)
  manager.wait_until_finished()
  assert manager.all_steps() == [2, 3]  # Keeps the newest 2.
  restored = checkpointing.restore(manager, state, meta)
  assert int(restored.step) == 3
  for a, b in zip(jax.tree_util.tree_leaves(restored.params), jax.tree_util.tree_leaves(state.params)):
    np.testing.assert_array_equal(a, np.asarray(b) + 3)
  for a, b in zip(jax.tree_util.tree_leaves((restored.opt_state, restored.rng)),
                  jax.tree_util.tree_leaves((state.opt_state, state.rng))):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="checkpoint step 7 is not in"):
    checkpointing.restore(manager, state, meta, step=7)
  # A wider model cannot load it: a one-line error naming a parameter and the config change.
  c2 = tiny.get_config()
  c2.model.ch = 24
  model2 = build.create_model(c2)
  tx2, _ = optimizer.create_optimizer(c2)
  state2 = train_step.create_train_state(jax.random.PRNGKey(0), c2, model2, tx2)
  meta2 = checkpointing.make_meta(state2.params, c2.model, build.image_shape(c2))
  with pytest.raises(checkpointing.CheckpointMismatchError, match=r"ch=16 \(config has 24\)") as e:
    checkpointing.restore(manager, state2, meta2)
  assert "\n" not in str(e.value)
  assert manager.all_steps() == [2, 3]  # Untouched.
  manager.close()


def test_prepare_workdir_rejects_files_and_unwritable_directories(tmp_path, monkeypatch):
  assert train_job.prepare_workdir(str(tmp_path / "new" / "dir")) == str(tmp_path / "new" / "dir")
  a_file = tmp_path / "f"
  a_file.write_text("x")
  with pytest.raises(ValueError, match="is a file"):
    train_job.prepare_workdir(str(a_file))
  # Root can write anywhere, so simulate a read-only directory.
  monkeypatch.setattr(train_job.os, "access", lambda path, mode: False)
  with pytest.raises(ValueError, match="is not writable") as e:
    train_job.prepare_workdir(str(tmp_path))
  assert "\n" not in str(e.value)


def test_samples_are_the_same_on_one_device_and_on_four():
  from ddpm.pipelines import generation
  c, model, *_, state, _ = tiny_state()
  params = jax.tree_util.tree_map(lambda p: p + 0.05 * jnp.sin(jnp.arange(p.size).reshape(p.shape)),
                                  state.params)  # Non-zero output layer.
  sched = schedules.schedule_from_config(c.diffusion)
  key = jax.random.PRNGKey(3)
  out = []
  for devices, per_device in ((jax.local_devices()[:1], 8), (jax.local_devices(), 2)):
    fn = generation.make_generate_fn(model, sched, c.sampling, c.diffusion, per_device,
                                     build.image_shape(c), devices=devices)
    rp = jax_utils.replicate(params, devices=devices, axis_name=replicas.AXIS)
    out.append(generation.generate(fn, rp, key, 8, per_device))
  assert out[0].shape == (8, 16, 16, 1) and out[0].std() > 0
  # Same images up to float rounding of different batch sizes (at most 1 level of 255).
  assert np.max(np.abs(out[0].astype(int) - out[1].astype(int))) <= 1
