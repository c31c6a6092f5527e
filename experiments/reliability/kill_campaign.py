"""Kill a training run with SIGKILL at random moments, restart it each time, and check that it
ends bit-identical to an uninterrupted run (step, params, EMA params, optimizer state, RNG key).

  TFDS_DATA_DIR=../shared/data/tensorflow_datasets python experiments/reliability/kill_campaign.py \
      --kills=12 --steps=60 --out=experiments/reliability/kill_campaign.json

Uses configs/tiny.py with a checkpoint every 5 steps and a log line every step; each kill
waits for the log line of a random step 1-12 steps past the restored one, then 0-0.4 s, so kills land mid-step, between
steps and during asynchronous checkpoint writes (counted by the orbax temporary directories
left behind).
"""

import argparse
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import orbax.checkpoint as ocp

REPO = pathlib.Path(__file__).resolve().parents[2]


def launch(workdir, steps):
  cmd = [sys.executable, "-u", "-m", "ddpm.main", "--config=configs/tiny.py", f"--workdir={workdir}",
         "--config.training.sample_every_steps=0", "--config.training.log_every_steps=1",
         "--config.training.checkpoint_every_steps=5", "--config.training.keep_checkpoints=3",
         f"--config.training.num_train_steps={steps}"]
  return subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)


def flat_state(workdir, step):
  return ocp.tree.to_flat_dict(ocp.StandardCheckpointer().restore(
      pathlib.Path(workdir) / "checkpoints" / str(step) / "state"))


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--kills", type=int, default=12)
  p.add_argument("--steps", type=int, default=60)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default=None)
  a = p.parse_args()
  rng = random.Random(a.seed)
  root = pathlib.Path(tempfile.mkdtemp(prefix="kill_campaign_"))
  t0 = time.time()
  ref = launch(root / "reference", a.steps)
  ref.stderr.read()
  assert ref.wait() == 0, "reference run failed"
  killed_dir = root / "killed"
  kills, during_save, resumed_from = 0, 0, []
  while kills < a.kills:
    proc = launch(killed_dir, a.steps)
    target, finished = None, False
    for line in proc.stderr:
      if "Restored checkpoint at step" in line:
        resumed_from.append(int(line.split("at step ")[1].split()[0]))
      if " from step " in line and target is None:  # "Training ... from step N: ..."
        start = int(line.split(" from step ")[1].split(":")[0])
        target = min(start + rng.randint(1, 12), a.steps - 1)
      if (target is not None and f"step {target}/" in line) or "Finished at step" in line:
        finished = "Finished at step" in line
        break
    if finished:  # Reached the end before the kill: nothing left to interrupt.
      proc.wait()
      break
    time.sleep(rng.uniform(0.0, 0.4))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills += 1
    if list((killed_dir / "checkpoints").glob("*orbax-checkpoint-tmp*")):
      during_save += 1
    print(f"kill {kills}: near step {target}", flush=True)
  final = launch(killed_dir, a.steps)
  log = final.stderr.read()
  assert final.wait() == 0, log[-3000:]
  ref_state, got = flat_state(root / "reference", a.steps), flat_state(killed_dir, a.steps)
  identical = ref_state.keys() == got.keys() and all(
      np.array_equal(ref_state[k], got[k]) for k in ref_state)
  result = {"kills": kills, "kills_during_checkpoint_write": during_save,
            "restarts_resumed_from_steps": resumed_from, "steps": a.steps,
            "arrays_compared": len(ref_state), "bit_identical": bool(identical),
            "wall_seconds": round(time.time() - t0, 1)}
  print(json.dumps(result, indent=2))
  if a.out:
    pathlib.Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
  shutil.rmtree(root, ignore_errors=True)
  sys.exit(0 if identical else 1)


if __name__ == "__main__":
  main()
