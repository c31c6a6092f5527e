"""Drawing images in rounds with resumable shards (`generation.generate` with a shard_dir)."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import jax_utils

from ddpm.diffusion import schedules
from ddpm.models import build
from ddpm.pipelines import generation
from ddpm.runtime import replicas
from tiny_state import tiny_state


def _counting(fn):
  calls = []

  def wrapped(*args):
    calls.append(1)
    return fn(*args)
  return wrapped, calls


def test_a_resumed_job_draws_only_missing_rounds_and_returns_the_same_images(tmp_path):
  c, model, *_, state, _ = tiny_state()
  params = jax.tree_util.tree_map(lambda p: p + 0.05 * jnp.cos(jnp.arange(p.size).reshape(p.shape)),
                                  state.params)
  sched = schedules.schedule_from_config(c.diffusion)
  devices = jax.local_devices()[:1]
  fn = generation.make_generate_fn(model, sched, c.sampling, c.diffusion, 4, build.image_shape(c),
                                   devices=devices)
  rp = jax_utils.replicate(params, devices=devices, axis_name=replicas.AXIS)
  key, shard_dir, ident = jax.random.PRNGKey(7), str(tmp_path / "shards"), {"checkpoint_step": 1}
  plain = generation.generate(fn, rp, key, 18, 4)  # 5 rounds of 4, the last one cut to 2.

  counted, calls = _counting(fn)
  first = generation.generate(counted, rp, key, 18, 4, shard_dir=shard_dir, shard_identity=ident)
  np.testing.assert_array_equal(first, plain)
  assert len(calls) == 5 and len(list((tmp_path / "shards").glob("shard_*.npy"))) == 5

  (tmp_path / "shards" / "shard_000001.npy").unlink()  # As if killed before rounds 1 and 3 ...
  (tmp_path / "shards" / "shard_000003.npy").write_bytes(b"truncated")  # ... or mid-write.
  counted, calls = _counting(fn)
  again = generation.generate(counted, rp, key, 18, 4, shard_dir=shard_dir, shard_identity=ident)
  assert len(calls) == 2
  np.testing.assert_array_equal(again, plain)

  # Another key (or sampler, checkpoint, labels) is another job: its shards start over.
  counted, calls = _counting(fn)
  other = generation.generate(counted, rp, jax.random.PRNGKey(8), 18, 4, shard_dir=shard_dir,
                              shard_identity=ident)
  assert len(calls) == 5 and not np.array_equal(other, plain)
  counted, calls = _counting(fn)
  generation.generate(counted, rp, key, 18, 4, shard_dir=shard_dir,
                      shard_identity={"checkpoint_step": 2})
  assert len(calls) == 5


def test_an_unwritable_shard_dir_is_a_warning_and_the_images_still_come(tmp_path, caplog):
  c, model, *_, state, _ = tiny_state()
  sched = schedules.schedule_from_config(c.diffusion)
  devices = jax.local_devices()[:1]
  fn = generation.make_generate_fn(model, sched, c.sampling, c.diffusion, 4, build.image_shape(c),
                                   devices=devices)
  rp = jax_utils.replicate(state.params, devices=devices, axis_name=replicas.AXIS)
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  images = generation.generate(fn, rp, jax.random.PRNGKey(0), 8, 4,
                               shard_dir=str(blocker / "shards"), shard_identity={})
  assert images.shape == (8, 16, 16, 1)
  assert any("going on without resumable shards" in r.getMessage() for r in caplog.records)
