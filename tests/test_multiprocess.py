"""Two JAX processes on loopback (CPU devices, gloo collectives) train the tiny config together.

Each process has 2 forced host devices, so pmap spans 4 devices in 2 processes, as on a
2-host pod slice; the model is tiny.py's with one U-Net level. The processes are `python -m ddpm.main` (tests/multiprocess_worker.py wraps
it to record what each process fed to training and the state it ended with). Process 0 gets
the distributed settings as flags, process 1 from the environment.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    not (pathlib.Path(os.environ.get("TFDS_DATA_DIR", "/nonexistent")) / "mnist").is_dir(),
    reason="needs the prepared MNIST in TFDS_DATA_DIR")
# The machinery under test does not depend on the model: a 1-level U-Net and XLA's cheapest
# code generation compile 3x faster than tiny.py's (the two processes compile concurrently).
SMALL_MODEL = ("--config.model.ch=8", "--config.model.ch_mult=(1,)", "--config.model.num_groups=4",
               "--config.model.attn_resolutions=()")
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
MNIST_TRAIN = 60_000
PER_PROCESS_BATCH = 16  # tiny.py: global batch 32 over 2 processes.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(tmp, name, *args):
  """Starts both processes; returns [(Popen, log path)]."""
  port = _free_port()
  procs = []
  for i in range(2):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=2 {FAST_COMPILE}",
               JAX_PLATFORMS="cpu")
    # The restart loads the programs the first run compiled (process 0 writes the cache).
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(tmp / "jax_cache"))
    cmd = [sys.executable, "-u", str(REPO / "tests" / "multiprocess_worker.py"),
           "--config=configs/tiny.py", f"--workdir={tmp / 'workdir'}",
           f"--out={tmp / f'{name}_{i}.npz'}", *SMALL_MODEL, *args]
    if i == 0:
      cmd += [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", "--process_id=0"]
    else:
      env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                 JAX_PROCESS_ID="1")
    log = tmp / f"{name}_{i}.log"
    with open(log, "w") as f:
      procs.append((subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT),
                    log))
  return procs


def _tail(procs) -> str:
  return "\n".join(f"--- process {i} ---\n" + log.read_text()[-3000:]
                   for i, (_, log) in enumerate(procs))


def _finish(procs, timeout=420):
  """Waits for both processes; kills both (by pid) if either fails or hangs."""
  try:
    deadline = time.time() + timeout
    for p, _ in procs:
      p.wait(timeout=max(deadline - time.time(), 1))
  except subprocess.TimeoutExpired:
    pytest.fail("the processes did not finish in time:\n" + _tail(procs))
  finally:
    for p, _ in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  assert [p.returncode for p, _ in procs] == [0, 0], _tail(procs)
  return [log.read_text() for _, log in procs]


def _wait_for(procs, index, needle, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if needle in procs[index][1].read_text():
      return
    if any(p.poll() is not None for p, _ in procs):
      break
    time.sleep(0.2)
  for p, _ in procs:
    p.kill()
    p.wait()
  pytest.fail(f"process {index} never logged {needle!r}:\n" + _tail(procs))


def _state(npz) -> dict:
  return {k[len("state/"):]: npz[k] for k in npz.files if k.startswith("state/")}


def _checkpoint(workdir, step) -> dict:
  restored = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
  return {"/".join(map(str, k)): np.asarray(v) for k, v in ocp.tree.to_flat_dict(restored).items()}


def _assert_same(a: dict, b: dict, what: str):
  assert a.keys() == b.keys() and len(a) > 10, what
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=f"{what}: {k}")


def test_two_processes_train_as_one_read_disjoint_data_and_resume_after_a_preemption(tmp_path):
  workdir = tmp_path / "workdir"
  # Run 1: steps 1-4, checkpoints at 2 and 4, a sample grid at 4.
  first = _launch(tmp_path, "first", "--config.training.num_train_steps=4",
                  "--config.training.checkpoint_every_steps=2",
                  "--config.training.log_every_steps=2", "--config.training.sample_every_steps=4")
  _finish(first)
  runs = [np.load(tmp_path / f"first_{i}.npz") for i in range(2)]
  for i, r in enumerate(runs):
    assert (int(r["process_index"]), int(r["process_count"]), int(r["local_device_count"]),
            int(r["device_count"])) == (i, 2, 2, 4)
  # Both processes hold the same state, bit for bit, and orbax wrote exactly that state once.
  _assert_same(_state(runs[0]), _state(runs[1]), "process 0 vs process 1")
  _assert_same(_state(runs[0]), _checkpoint(workdir, 4), "process 0 vs checkpoint 4")
  moved = [k for k, v in _checkpoint(workdir, 2).items()
           if k.startswith("params/") and not np.array_equal(v, _state(runs[0])[k])]
  assert moved, "the parameters changed from step 2 to 4, so the comparison is not vacuous"
  # Each process read its own half of the split: disjoint, no example twice.
  idx = [r["indices"] for r in runs]
  assert idx[0].shape == idx[1].shape == (4, 2, PER_PROCESS_BATCH // 2)  # [steps, devices, b].
  assert idx[0].min() >= 0 and idx[0].max() < MNIST_TRAIN // 2
  assert idx[1].min() >= MNIST_TRAIN // 2 and idx[1].max() < MNIST_TRAIN
  assert len(np.unique(np.concatenate([idx[0].ravel(), idx[1].ravel()]))) == 2 * idx[0].size
  # Process 0 alone wrote the logs: one TensorBoard file, one metrics line per logging step.
  assert [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()] == [2, 4]
  assert len(list(workdir.glob("events.out.tfevents.*"))) == 1
  assert (workdir / "samples" / "step_0000004.png").is_file() and (workdir / "config.json").is_file()

  # Run 2: both restart from the shared checkpoint; a SIGTERM to process 1 alone (a preemption
  # notice reaching one host) stops both at the same step after a checkpoint there.
  second = _launch(tmp_path, "second", "--config.training.num_train_steps=1000",
                   "--config.training.checkpoint_every_steps=1000",
                   "--config.training.log_every_steps=1", "--config.training.sample_every_steps=0")
  _wait_for(second, 1, "step 6/1000")
  second[1][0].send_signal(signal.SIGTERM)
  logs = _finish(second)
  runs2 = [np.load(tmp_path / f"second_{i}.npz") for i in range(2)]
  stop = int(_state(runs2[0])["step"])
  assert 6 <= stop < 1000
  for log, r in zip(logs, runs2):
    assert "Restored checkpoint at step 4" in log and "from step 4" in log
    assert f"reached the preemption sync point at step {stop}" in log
    assert int(r["start_step"]) == 4
  _assert_same(_state(runs2[0]), _state(runs2[1]), "after the restart: process 0 vs 1")
  _assert_same(_state(runs2[0]), _checkpoint(workdir, stop), f"process 0 vs checkpoint {stop}")
  # The data stream went on where run 1 left it: new examples, still each process's own half.
  idx2 = [r["indices"] for r in runs2]
  assert idx2[0].max() < MNIST_TRAIN // 2 <= idx2[1].min()
  for a, b in zip(idx, idx2):
    assert not set(a.ravel()) & set(b.ravel())
