"""Runs that survive: damaged checkpoints, non-finite steps, signals, kills at any moment."""

import os
import pathlib
import resource
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ddpm.runtime import checkpointing
from tiny_state import tiny_state

REPO = pathlib.Path(__file__).resolve().parents[2]
HAVE_MNIST = (pathlib.Path(os.environ.get("TFDS_DATA_DIR", "/nonexistent")) / "mnist").is_dir()
FSIZE_LIMIT = 64 * 1024  # Bytes: above the logs and grids of a 30-step tiny run, below its checkpoint files.


def _truncate_data(step_dir):
  for f in (step_dir / "state").rglob("*"):
    if f.is_file() and f.stat().st_size > 100:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _garbage_metadata(step_dir):
  (step_dir / "state" / "_METADATA").write_bytes(b"\x00garbage")


def _missing_manifest(step_dir):
  (step_dir / "state" / "manifest.ocdbt").unlink()


def _garbage_meta_json(step_dir):
  for f in (step_dir / "meta").glob("metadata"):
    f.write_text("{not json")


@pytest.mark.parametrize("damage", [_truncate_data, _garbage_metadata, _missing_manifest,
                                    _garbage_meta_json])
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_good_one(tmp_path, damage, caplog):
  *_, state, meta = tiny_state()
  manager = checkpointing.create_manager(str(tmp_path), max_to_keep=3)
  for step in (1, 2, 3):
    s = state.replace(step=jnp.asarray(step, jnp.int32),
                      params=jax.tree_util.tree_map(lambda x: x + step, state.params))
    checkpointing.save(manager, step, s, meta)
  manager.wait_until_finished()
  damage(tmp_path / "checkpoints" / "3")
  good = {str(p): p.read_bytes() for p in (tmp_path / "checkpoints" / "2").rglob("*") if p.is_file()}
  restored = checkpointing.restore(manager, state, meta)
  assert int(restored.step) == 2
  leaf = jax.tree_util.tree_leaves(restored.params)[0]
  np.testing.assert_array_equal(leaf, np.asarray(jax.tree_util.tree_leaves(state.params)[0]) + 2)
  assert manager.all_steps() == [1, 2]
  assert (tmp_path / "checkpoints_corrupt" / "3").is_dir()  # Moved aside, not deleted.
  assert good == {str(p): p.read_bytes() for p in (tmp_path / "checkpoints" / "2").rglob("*")
                  if p.is_file()}
  # Training on saves step 3 again without touching the good ones.
  checkpointing.save(manager, 3, restored.replace(step=jnp.asarray(3, jnp.int32)), meta)
  manager.wait_until_finished()
  assert manager.all_steps() == [1, 2, 3]
  manager.close()


def test_a_checkpoint_with_nans_is_never_written(tmp_path):
  *_, state, meta = tiny_state()
  manager = checkpointing.create_manager(str(tmp_path), max_to_keep=3)
  bad = state.replace(params=jax.tree_util.tree_map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan),
                                                    state.params))
  with pytest.raises(FloatingPointError, match="refusing to write checkpoint step 5"):
    checkpointing.save(manager, 5, bad, meta)
  manager.wait_until_finished()
  assert manager.all_steps() == []
  # One written behind our back (orbax directly) is treated as damaged on restore.
  checkpointing.save(manager, 1, state, meta)
  manager.save(2, args=ocp.args.Composite(state=ocp.args.StandardSave(bad),
                                          meta=ocp.args.JsonSave(meta)))
  manager.wait_until_finished()
  assert int(checkpointing.restore(manager, state, meta).step) == 0  # Step 1's state: step 0.
  assert manager.all_steps() == [1]
  assert (tmp_path / "checkpoints_corrupt" / "2").is_dir()
  manager.close()


def _launch_cmd(workdir, *args):
  return [sys.executable, "-u", "-m", "ddpm.main", "--config=configs/tiny.py",
          f"--workdir={workdir}", "--config.training.sample_every_steps=0",
          "--config.training.log_every_steps=1", "--config.training.checkpoint_every_steps=5",
          "--config.training.keep_checkpoints=3", *args]


def _launch(workdir, *args, **kwargs):
  return subprocess.Popen(_launch_cmd(workdir, *args), cwd=REPO, stderr=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, text=True, **kwargs)


def _wait_for(proc, needle, timeout=300):
  """Reads the process's log until a line contains `needle`; returns the lines read."""
  lines, start = [], time.time()
  for line in proc.stderr:
    lines.append(line)
    if needle in line:
      return lines
    if time.time() - start > timeout:
      break
  raise AssertionError(f"never saw {needle!r}; last lines: {''.join(lines[-20:])}")


def _flat_state(workdir, step):
  return ocp.tree.to_flat_dict(ocp.StandardCheckpointer().restore(
      pathlib.Path(workdir) / "checkpoints" / str(step) / "state"))


@pytest.fixture(scope="module")
def lone_run(tmp_path_factory):
  """A 30-step tiny run, never interrupted: what every interrupted run must end equal to. It
  compiles everything itself (the compilation cache off); the runs it is compared with load
  from the session's cache what they can."""
  workdir = tmp_path_factory.mktemp("lone_run")
  proc = _launch(workdir, "--config.training.num_train_steps=30",
                 env={**os.environ, "DDPM_COMPILATION_CACHE": "0"})
  assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]
  return workdir


def _assert_same_state(reference, workdir, step=30):
  a, b = _flat_state(reference, step), _flat_state(workdir, step)
  assert a.keys() == b.keys() and len(a) > 10
  for k in a:  # step, params, EMA params, optimizer state and RNG key.
    np.testing.assert_array_equal(a[k], b[k], err_msg=f"{pathlib.Path(workdir).name}: {k}")


@pytest.mark.skipif(not HAVE_MNIST, reason="needs the prepared MNIST in TFDS_DATA_DIR")
def test_sigkill_at_any_moment_then_restart_ends_bit_identical(tmp_path, lone_run):
  steps = "--config.training.num_train_steps=30"
  killed = tmp_path / "killed"
  # Kill points: mid-interval, right as a checkpoint write starts, and just after one.
  for needle, delay in (("step 7/30", 0.0), ("Saving checkpoint at step 15", 0.0),
                        ("step 21/30", 0.05)):
    proc = _launch(killed, steps)
    _wait_for(proc, needle)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
  final = _launch(killed, steps)
  log = "".join(_wait_for(final, "Finished at step 30"))
  assert final.wait(timeout=120) == 0
  assert "Restored checkpoint at step" in log
  cache = [line for line in log.splitlines() if "XLA compilation cache: " in line]
  assert len(cache) == 1 and "off" not in cache[0], cache
  # The SIGKILLed run's lock record was left behind; the kernel had dropped its lock.
  assert "Took over the lock of" in log and "which no longer runs" in log, log[-3000:]
  # Two identical commands started together on one workdir (a job re-queued while it runs):
  # exactly one trains, the other stops at once naming it, and the result is a lone run's.
  duo = [_launch(tmp_path / "duo", steps) for _ in range(2)]
  outs = [(p.wait(timeout=600), p.stderr.read()) for p in duo]
  assert sorted(rc != 0 for rc, _ in outs) == [False, True], [o[-1500:] for _, o in outs]
  refused = next(out for rc, out in outs if rc != 0)
  winner = duo[next(i for i, (rc, _) in enumerate(outs) if rc == 0)]
  errors = [line for line in refused.splitlines() if line.startswith("ddpm: error:")]
  assert len(errors) == 1 and f"is being trained by pid {winner.pid} on host" in errors[0], refused
  assert "Traceback" not in refused and "Restored checkpoint" not in refused
  for workdir in (killed, tmp_path / "duo"):
    _assert_same_state(lone_run, workdir)


def _checkpoint_files(workdir):
  root = pathlib.Path(workdir) / "checkpoints"
  return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in root.rglob("*") if p.is_file()}


@pytest.mark.skipif(not HAVE_MNIST, reason="needs the prepared MNIST in TFDS_DATA_DIR")
def test_a_full_disk_is_a_clean_stop_and_the_rerun_resumes_bit_identically(tmp_path, lone_run):
  """The storage refuses writes mid-run, at the OS level: after the checkpoint of step 10 the
  test lowers the run's RLIMIT_FSIZE (prlimit), so every larger write fails with EFBIG, as a
  full disk's do with ENOSPC. The run logs one line, removes its partial checkpoint, keeps the
  earlier ones byte-identical, exits non-zero; a rerun with room ends equal to a lone run."""
  steps = "--config.training.num_train_steps=30"
  workdir = tmp_path / "full"
  workdir.mkdir()
  (workdir / "samples").write_text("a file where the grids' folder goes")  # Grids fail: warnings.
  proc = _launch(workdir, steps, "--config.training.sample_every_steps=5")
  lines = _wait_for(proc, "step 11/30")
  deadline = time.time() + 120
  while not (workdir / "checkpoints" / "10").is_dir() and time.time() < deadline:
    time.sleep(0.05)  # Orbax renames a checkpoint into place once all its files are written.
  before = _checkpoint_files(workdir)
  assert {"5", "10"} <= {k.split("/")[0] for k in before}, sorted(before)
  resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (FSIZE_LIMIT, resource.RLIM_INFINITY))
  rest = proc.stderr.read()
  assert proc.wait(timeout=300) != 0
  errors = [line for line in rest.splitlines() if line.startswith("ddpm: error:")]
  assert len(errors) == 1, "".join(lines[-5:]) + rest[-3000:]
  assert "cannot write checkpoint step" in errors[0] and "File too large" in errors[0], errors[0]
  assert "Traceback" not in rest
  log = "".join(lines) + rest
  assert log.count("Could not write the sample grid") == 1 and "training goes on" in log
  after = _checkpoint_files(workdir)
  assert not [k for k in after if "tmp" in k], sorted(after)  # Its partial write is gone.
  assert {k: v for k, v in after.items() if k.split("/")[0] in ("5", "10")} == {
      k: v for k, v in before.items() if k.split("/")[0] in ("5", "10")}
  rerun = _launch(workdir, steps)
  log = "".join(_wait_for(rerun, "Finished at step 30"))
  assert rerun.wait(timeout=120) == 0 and "Restored checkpoint at step" in log
  _assert_same_state(lone_run, workdir)


@pytest.mark.skipif(not HAVE_MNIST, reason="needs the prepared MNIST in TFDS_DATA_DIR")
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
  proc = _launch(tmp_path, "--config.training.num_train_steps=100000")
  _wait_for(proc, "step 12/100000")
  drained = []  # Keep reading its log so that it never blocks on a full pipe.
  reader = threading.Thread(target=lambda: drained.extend(proc.stderr), daemon=True)
  reader.start()
  # While it trains: a second training run is refused, sampling (read-only) works.
  procs = [subprocess.Popen(_launch_cmd(tmp_path, *args), cwd=REPO, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
           for args in (["--config.training.num_train_steps=1000"],
                        ["--mode=sample", "--config.sampling.num_samples=8",
                         "--config.sampling.batch_size=8"])]  # Both at once, beside the trainer.
  logs = [p.communicate(timeout=300)[1] for p in procs]  # Short logs: no pipe fills up.
  second, sampler = (subprocess.CompletedProcess(p.args, p.returncode, None, log)
                     for p, log in zip(procs, logs))
  assert proc.poll() is None, "the training run ended before the checks"
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 0
  reader.join(timeout=60)
  rest = "".join(drained)
  assert second.returncode != 0 and "Traceback" not in second.stderr
  assert (f"ddpm: error: workdir {tmp_path} is being trained by pid {proc.pid} on host"
          in second.stderr), second.stderr[-2000:]
  assert sampler.returncode == 0, sampler.stderr[-3000:]
  assert list((tmp_path / "samples").glob("ddim10_eta0_seed0_step*.npz"))
  assert proc.wait(timeout=120) == 0, rest[-3000:]
  assert "Stopped by signal" in rest
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert 12 <= steps[-1] < 100000, (steps, rest[-4000:])
  assert int(_flat_state(tmp_path, steps[-1])[("step",)]) == steps[-1]


def test_retention_keeps_the_newest_k_and_every_nth(tmp_path):
  *_, state, meta = tiny_state()
  manager = checkpointing.create_manager(str(tmp_path), max_to_keep=2, keep_period=4)
  for step in range(1, 11):
    checkpointing.save(manager, step, state.replace(step=jnp.asarray(step, jnp.int32)), meta)
  manager.wait_until_finished()
  assert manager.all_steps() == [4, 8, 9, 10]
  manager.close()


def test_retention_keeps_the_custom_steps_as_well(tmp_path):
  *_, state, meta = tiny_state()
  manager = checkpointing.create_manager(str(tmp_path), max_to_keep=2, keep_period=4,
                                         keep_steps=(3, 5, 8))
  for step in range(1, 11):
    checkpointing.save(manager, step, state.replace(step=jnp.asarray(step, jnp.int32)), meta)
  manager.wait_until_finished()
  assert manager.all_steps() == [3, 4, 5, 8, 9, 10]
  manager.close()


def test_mean_params_is_the_elementwise_average_of_any_number_of_trees():
  """mean_params of K trees: the mean of one tree is the tree; the mean does not depend on the
  trees' order; the mean of a, b is (a + b) / 2; adding a constant c to every tree adds c."""
  from hypothesis import given, settings, strategies as st

  @settings(max_examples=40, deadline=None)
  @given(st.integers(1, 5), st.integers(0, 2**31 - 1), st.floats(-3, 3))
  def check(k, seed, c):
    rng = np.random.default_rng(seed)
    trees = [{"a": {"w": rng.normal(size=(3, 2)).astype(np.float32)},
              "b": rng.normal(size=(4,)).astype(np.float32)} for _ in range(k)]
    mean = checkpointing.mean_params(trees)
    want = jax.tree_util.tree_map(lambda *xs: np.mean(np.stack(xs), 0), *trees)
    jax.tree_util.tree_map(lambda m, w: np.testing.assert_allclose(m, w, rtol=1e-6, atol=1e-6),
                           mean, want)
    assert mean["b"].dtype == np.float32
    jax.tree_util.tree_map(np.testing.assert_array_equal, checkpointing.mean_params(trees[:1]),
                           trees[0])
    jax.tree_util.tree_map(lambda m, r: np.testing.assert_allclose(m, r, rtol=1e-6, atol=1e-6),
                           mean, checkpointing.mean_params(trees[::-1]))
    shifted = checkpointing.mean_params(
        [jax.tree_util.tree_map(lambda x: x + np.float32(c), t) for t in trees])
    jax.tree_util.tree_map(lambda s, m: np.testing.assert_allclose(s, m + c, rtol=1e-5, atol=1e-5),
                           shifted, mean)
  check()
  with pytest.raises(ValueError, match="at least one"):
    checkpointing.mean_params([])
  with pytest.raises(ValueError, match="another structure"):
    checkpointing.mean_params([{"a": np.zeros(2)}, {"b": np.zeros(2)}])


def test_nonfinite_arrays_names_exactly_the_bad_leaves():
  from hypothesis import given, strategies as st

  @given(st.lists(st.sampled_from([0.0, 1.5, np.nan, np.inf, -np.inf]), min_size=1, max_size=6))
  def check(values):
    tree = {f"w{i}": np.full((2,), v, np.float32) for i, v in enumerate(values)}
    tree["count"] = np.int32(3)  # Integers are never "non-finite".
    expected = sorted(f"w{i}" for i, v in enumerate(values) if not np.isfinite(v))
    assert sorted(checkpointing.nonfinite_arrays(tree)) == expected
  check()
