r"""Full-disk campaign: a tiny training run whose writes the OS refuses mid-run, then a rerun.

Each trial trains configs/tiny.py for 40 steps (a checkpoint every 10), lowers the running
process's RLIMIT_FSIZE with prlimit right after the step-10 checkpoint is in place (every
write of a file past the limit then fails with EFBIG, as a full disk's writes fail with
ENOSPC), and checks: a non-zero exit with exactly one `ddpm: error:` line, no traceback on
stderr, no orbax temporary directory left, checkpoint 10's files unchanged; then reruns without
the limit and checks that it resumes and ends at step 40 with the state of an uninterrupted run.

  TFDS_DATA_DIR=../shared/data/tensorflow_datasets \
      python experiments/reliability/full_disk.py --trials=3 --out=experiments/reliability/full_disk.json
"""

import argparse
import json
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import orbax.checkpoint as ocp

REPO = pathlib.Path(__file__).resolve().parents[2]


def _cmd(workdir):
  return [sys.executable, "-u", "-m", "ddpm.main", "--config=configs/tiny.py",
          f"--workdir={workdir}", "--config.training.num_train_steps=40",
          "--config.training.sample_every_steps=0"]


def _files(workdir, step):
  root = pathlib.Path(workdir) / "checkpoints" / str(step)
  return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _state(workdir, step=40):
  return ocp.tree.to_flat_dict(ocp.StandardCheckpointer().restore(
      pathlib.Path(workdir) / "checkpoints" / str(step) / "state"))


def trial(root, limit, reference):
  workdir = root / "run"
  proc = subprocess.Popen(_cmd(workdir), cwd=REPO, stderr=subprocess.PIPE, text=True)
  lines = []
  for line in proc.stderr:
    lines.append(line)
    if "Saving checkpoint at step 10" in line:
      break
  while not (workdir / "checkpoints" / "10").is_dir():
    time.sleep(0.02)
  before = _files(workdir, 10)
  resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
  lines += proc.stderr.readlines()
  rc = proc.wait()
  log = "".join(lines)
  errors = [l for l in lines if l.startswith("ddpm: error:")]
  names = [p.name for p in (workdir / "checkpoints").iterdir()]
  unchanged = _files(workdir, 10) == before  # Before the rerun, whose retention deletes it.
  rerun = subprocess.run(_cmd(workdir), cwd=REPO, capture_output=True, text=True)
  a, b = _state(reference), _state(workdir) if rerun.returncode == 0 else {}
  return {"exit_code": rc, "error_lines": len(errors), "error": errors[0].strip() if errors else None,
          "tracebacks": log.count("Traceback"), "temporary_dirs_left": sum("tmp" in n for n in names),
          "checkpoints_kept": sorted(int(n) for n in names if n.isdigit()),
          "checkpoint_10_unchanged": unchanged,
          "rerun_exit_code": rerun.returncode,
          "rerun_bit_identical": bool(b) and a.keys() == b.keys() and all(
              np.array_equal(a[k], b[k]) for k in a)}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--trials", type=int, default=3)
  parser.add_argument("--limit_bytes", type=int, default=64 * 1024)
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  root = pathlib.Path(tempfile.mkdtemp(prefix="ddpm_full_disk_"))
  t0 = time.time()
  subprocess.run(_cmd(root / "reference"), cwd=REPO, check=True, capture_output=True)
  results = []
  for i in range(args.trials):
    shutil.rmtree(root / "run", ignore_errors=True)
    results.append(trial(root, args.limit_bytes, root / "reference"))
    print(json.dumps(results[-1]), flush=True)
  summary = {"trials": results, "seconds": round(time.time() - t0, 1),
             "clean_stops": sum(r["exit_code"] != 0 and r["error_lines"] == 1 and r["tracebacks"] == 0
                                and r["temporary_dirs_left"] == 0 and r["checkpoint_10_unchanged"]
                                for r in results),
             "resumed_bit_identical": sum(r["rerun_bit_identical"] for r in results)}
  print(json.dumps({k: v for k, v in summary.items() if k != "trials"}))
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
  shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  main()
