"""Issue 15, lever 1, second try: does a caching allocator (jemalloc, tcmalloc) speed up the
README's MNIST run? Interleaved A/B rounds of the real command, so machine noise cancels.

  PYTHONPATH=. TFDS_DATA_DIR=... python experiments/benchmark/allocator_ab.py --rounds 2 --steps 120

Each round runs `python -m ddpm.main --config=configs/mnist.py` for `--steps` steps once per
allocator (glibc, then each LD_PRELOAD library found), in a fresh workdir, and reads from its log
the steps/s of every logging interval after the first (compilation excluded); the process's
minor page faults and system time come from /usr/bin/time. Prints one JSON line per run and a
summary of the median steps/s per allocator and its ratio to glibc's.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[2]
LIBS = {"jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
        "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"}
RATE = re.compile(r"step (\d+)/\d+: .*?([\d.]+) steps/s")


def one_run(name: str, lib: str | None, steps: int, log_every: int) -> dict:
  env = dict(os.environ, DDPM_NO_TCMALLOC="1")  # ddpm.main would re-execute under tcmalloc.
  if lib:
    env["LD_PRELOAD"] = lib
  with tempfile.TemporaryDirectory() as tmp:
    cmd = ["/usr/bin/time", "-f", "TIME wall %e user %U sys %S minflt %R maxrss %M",
           sys.executable, "-m", "ddpm.main", "--config=configs/mnist.py", f"--workdir={tmp}/w",
           f"--config.training.num_train_steps={steps}", "--config.training.sample_every_steps=0",
           f"--config.training.log_every_steps={log_every}",
           f"--config.training.checkpoint_every_steps={steps}"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  log = out.stdout + out.stderr
  if out.returncode != 0:
    raise RuntimeError(f"{name}: exit {out.returncode}: {log[-2000:]}")
  rates = [(int(s), float(r)) for s, r in RATE.findall(log)]
  rates = [r for s, r in rates if s > log_every]  # The first interval holds the compilation.
  time_line = next(line for line in log.splitlines() if line.startswith("TIME "))
  fields = dict(zip(time_line.split()[1::2], time_line.split()[2::2]))
  return dict(allocator=name, steps_per_s=statistics.median(rates), rates=rates,
              **{k: float(v) for k, v in fields.items()})


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--steps", type=int, default=120)
  p.add_argument("--log_every", type=int, default=20)
  args = p.parse_args()
  variants = [("glibc", None)] + [(n, l) for n, l in LIBS.items() if os.path.exists(l)]
  results = []
  for _ in range(args.rounds):
    for name, lib in variants:
      r = one_run(name, lib, args.steps, args.log_every)
      print(json.dumps(r), flush=True)
      results.append(r)
  base = statistics.median(r["steps_per_s"] for r in results if r["allocator"] == "glibc")
  for name, _ in variants:
    mine = [r for r in results if r["allocator"] == name]
    rate = statistics.median(r["steps_per_s"] for r in mine)
    print(f"{name:9s} {rate:.3f} steps/s ({rate / base:.3f}x glibc), "
          f"minflt {statistics.median(r['minflt'] for r in mine):,.0f}, "
          f"sys {statistics.median(r['sys'] for r in mine):.1f} s, "
          f"maxrss {statistics.median(r['maxrss'] for r in mine) / 1024:.0f} MB", flush=True)


if __name__ == "__main__":
  main()
