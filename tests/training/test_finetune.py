"""Fine-tuning: parameters chosen by pattern, frozen ones bit-identical, init from a checkpoint."""

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import jax_utils
from hypothesis import given, strategies as st

from configs import tiny
from ddpm.diffusion import schedules
from ddpm.jobs import train as train_job
from ddpm.runtime import checkpointing, replicas
from ddpm.training import finetune, optimizer, train_step
from tiny_state import tiny_state

HAVE_MNIST = (pathlib.Path(os.environ.get("TFDS_DATA_DIR", "/nonexistent")) / "mnist").is_dir()


def _flat(tree):
  return checkpointing.leaves_by_path(tree)


def _tops(params):
  return sorted({p.split("/")[0] for p in finetune.param_paths(params)})


@given(st.data())
def test_mask_is_the_union_of_its_patterns_matches(data):
  params = tiny_state()[4].params
  tops = _tops(params)
  chosen = data.draw(st.lists(st.sampled_from(tops), min_size=1, max_size=4, unique=True))
  patterns = [f"^{t}/" for t in chosen]
  mask = _flat(finetune.trainable_mask(params, ",".join(patterns)))
  singles = [_flat(finetune.trainable_mask(params, p)) for p in patterns]
  for path, flag in mask.items():
    assert flag == any(s[path] for s in singles)
    assert flag == (path.split("/")[0] in chosen)
  assert all(_flat(finetune.trainable_mask(params, "")).values())  # Empty: everything.


@pytest.mark.parametrize("spec,match", [("^nothing_here", "'\\^nothing_here' matches no parameter"),
                                        ("^up_,zzz", "'zzz' matches no parameter"),
                                        ("up_(", "not a regular expression")])
def test_bad_trainable_patterns_are_one_line_errors(spec, match):
  params = tiny_state()[4].params
  with pytest.raises(ValueError, match=match) as e:
    finetune.trainable_mask(params, spec)
  assert "\n" not in str(e.value) and ("conv_in" in str(e.value) or "regular" in str(e.value))


def test_frozen_parameters_and_their_ema_stay_bit_identical_while_the_rest_train():
  c = tiny.get_config()
  c.training.trainable = "^up_,^conv_out"
  model, tx, lr_fn, state, _ = train_step.initial_state(c)
  # As from a trained model: no zero-initialized layers, so every parameter gets a gradient.
  leaves, tree = jax.tree_util.tree_flatten(state.params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  state = train_step.create_train_state(jax.random.PRNGKey(0), c, model, tx, jax.tree_util.tree_unflatten(
      tree, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]))
  mask = _flat(finetune.trainable_mask(state.params, c.training.trainable))
  n_train, n_frozen = finetune.count(state.params, finetune.trainable_mask(state.params,
                                                                          c.training.trainable))
  assert n_train > 0 and n_frozen > 0
  # Frozen parameters carry no Adam moments: the optimizer state is smaller.
  full_state = optimizer.create_optimizer(tiny.get_config())[0].init(state.params)
  size = lambda t: sum(np.size(x) for x in jax.tree_util.tree_leaves(t))
  assert size(state.opt_state) < size(full_state) - n_frozen
  p_step = train_step.make_p_train_step(model, schedules.schedule_from_config(c.diffusion), tx, lr_fn, c)
  rs = jax_utils.replicate(state, axis_name=replicas.AXIS)
  rng = np.random.default_rng(0)
  for _ in range(3):
    batch = {"image": rng.uniform(-1, 1, (4, 8, 16, 16, 1)).astype(np.float32),
             "label": np.zeros((4, 8), np.int32)}
    rs, _ = p_step(rs, batch)
  after = replicas.unreplicate(rs)
  before_p, before_e = _flat(state.params), _flat(state.ema_params)
  after_p, after_e = _flat(after.params), _flat(after.ema_params)
  moved = 0
  for path, trainable in mask.items():
    if trainable:
      moved += int(np.any(after_p[path] != before_p[path]))
    else:
      np.testing.assert_array_equal(after_p[path], before_p[path], err_msg=path)
      np.testing.assert_array_equal(after_e[path], before_e[path], err_msg=path)
  assert moved == sum(mask.values())  # Every trainable parameter did train.


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
  """A workdir with checkpoint 5 of the tiny model whose params and EMA params differ."""
  path = tmp_path_factory.mktemp("source")
  _, _, _, _, state, meta = tiny_state()
  state = state.replace(
      step=jnp.asarray(5, jnp.int32),
      params=jax.tree_util.tree_map(lambda p: p + 0.25, state.params),
      ema_params=jax.tree_util.tree_map(lambda p: p - 0.5 * jnp.cos(p), state.params))
  manager = checkpointing.create_manager(str(path), max_to_keep=None)
  checkpointing.save(manager, 5, state, meta)
  manager.wait_until_finished()
  manager.close()
  return path, state


@pytest.mark.parametrize("which", ["ema", "params"])
@pytest.mark.parametrize("where", ["workdir", "checkpoints", "step"])
def test_init_from_reads_the_chosen_parameters_from_any_of_three_paths(source_run, which, where):
  path, src = source_run
  target = {"workdir": path, "checkpoints": path / "checkpoints",
            "step": path / "checkpoints" / "5"}[where]
  _, _, _, _, state, meta = tiny_state()
  params, step = finetune.load_init_params(str(target), state.params, meta, which)
  assert step == 5
  want = _flat(src.ema_params if which == "ema" else src.params)
  for path_, leaf in _flat(params).items():
    np.testing.assert_array_equal(leaf, want[path_], err_msg=path_)


def test_init_from_bad_paths_and_shapes_are_one_line_errors(source_run, tmp_path):
  path, _ = source_run
  _, _, _, _, state, meta = tiny_state()
  c2 = tiny.get_config()
  c2.model.ch = 24
  _, _, _, state2, meta2 = train_step.initial_state(c2)
  cases = [(str(path), state2.params, meta2, checkpointing.CheckpointMismatchError, "another shape"),
           (str(tmp_path / "missing"), state.params, meta, ValueError, "is not a directory"),
           (str(tmp_path), state.params, meta, ValueError, "holds no checkpoint")]
  for init_from, template, m, err, match in cases:
    with pytest.raises(err, match=match) as e:
      finetune.load_init_params(init_from, template, m)
    assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="init_params='last'"):
    finetune.load_init_params(str(path), state.params, meta, "last")


@pytest.mark.skipif(not HAVE_MNIST, reason="needs the prepared MNIST in TFDS_DATA_DIR")
def test_a_finetuning_run_starts_from_the_source_and_keeps_frozen_parameters(source_run, tmp_path):
  path, src = source_run
  c = tiny.get_config()
  c.training.init_from = str(path)
  c.training.trainable = "^up_1_,^out_norm"
  c.training.num_train_steps, c.training.sample_every_steps = 3, 0
  trainer = train_job.Trainer.setup(c, str(tmp_path))
  assert trainer.start_step == 0
  final = trainer.run()
  assert int(final.step) == 3
  mask = _flat(finetune.trainable_mask(final.params, c.training.trainable))
  src_ema, out = _flat(src.ema_params), _flat(final.params)
  for p, trainable in mask.items():
    if not trainable:
      np.testing.assert_array_equal(out[p], src_ema[p], err_msg=p)
  assert any(np.any(out[p] != src_ema[p]) for p, t in mask.items() if t)
  # A restart resumes the run's own checkpoint (step 3), not the source.
  c.training.num_train_steps = 4
  again = train_job.Trainer.setup(c, str(tmp_path))
  assert again.start_step == 3
  again.manager.close()
