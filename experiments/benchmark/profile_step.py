r"""Where the whole train step's time goes, op by op, from a profiler trace of the real step.

profile_ops.py times each kind of layer alone; this traces the trainer's own compiled step
(`ddpm.training.train_step.make_p_train_step`, configs/mnist.py or configs/benchmark.py, random
images on the device) with `jax.profiler` and sums the duration of every XLA op over the traced
steps: by kind of op (the HLO name without its number: ffi_call = the oneDNN convolutions,
ynn_fusion = YNNPACK dots, *_reduce_fusion = reductions such as GroupNorm's and the bias
gradients, ...), and for the oneDNN convolutions by direction and shape with GFLOP/s.

  PYTHONPATH=.:experiments/benchmark python experiments/benchmark/profile_step.py --config mnist --batch 64
  PYTHONPATH=.:experiments/benchmark python experiments/benchmark/profile_step.py --trace DIR  # re-read

Run it under tcmalloc (LD_PRELOAD, as `python -m ddpm.main` runs) on an otherwise idle machine.
Ops of one step can run concurrently on the CPU's threads, so the op times can add up to more
than the step's wall time; the shares are what to read.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import math
import os
import re


def _trace_events(trace_dir):
  files = sorted(glob.glob(os.path.join(trace_dir, "plugins/profile/*/*.trace.json.gz")))
  if not files:
    raise SystemExit(f"no trace under {trace_dir}")
  return [e for e in json.load(gzip.open(files[-1]))["traceEvents"] if e.get("ph") == "X"]


_NOT_OPS = ("ThunkExecutor", "$", "PjitFunction", "CommonPjRt", "SlinkyThreadPool")


def summarize(trace_dir: str, hlo: str, steps: int) -> dict:
  per_op = collections.defaultdict(float)  # ms per step.
  for e in _trace_events(trace_dir):
    if not e["name"].startswith(_NOT_OPS):
      per_op[e["name"]] += e["dur"] / 1000 / steps
  kinds = collections.defaultdict(lambda: [0, 0.0])
  for name, ms in per_op.items():
    kind = re.sub(r"\.\d+$", "", name)
    kinds[kind][0] += 1
    kinds[kind][1] += ms
  total = sum(ms for _, ms in kinds.values())
  shapes = dict(re.findall(r"%([\w.-]+) = f32\[([\d,]*)\]", hlo))
  convs = collections.defaultdict(lambda: [0, 0.0, 0.0])
  for m in re.finditer(r'%(ffi_call\.\d+) = f32\[([\d,]+)\]\S* custom-call\(%([\w.-]+), '
                       r'%([\w.-]+)\), custom_call_target="ddpm_onednn_conv_(\w+)"', hlo):
    name, out, a, b, direction = m.groups()
    dims = {"forward": (shapes.get(a), shapes.get(b), out),
            "backward_data": (out, shapes.get(b), shapes.get(a)),
            "backward_weights": (shapes.get(a), out, shapes.get(b))}[direction]
    x, w, y = ([int(v) for v in s.split(",")] if s else None for s in dims)
    key = (direction, f"{x[0]}x{x[1]}x{x[2]}x{x[3]} -> {y[1]}x{y[2]}x{y[3]}, {w[0]}x{w[1]}")
    flops = 2 * math.prod(y) * w[0] * w[1] * w[2]  # multiply-adds x 2, the same each direction.
    convs[key][0] += 1
    convs[key][1] += per_op.get(name, 0.0)
    convs[key][2] += flops
  return {"total_ms": total,
          "kinds": sorted(([k, n, ms] for k, (n, ms) in kinds.items()), key=lambda r: -r[2]),
          "convs": sorted(([d, s, n, ms, fl / ms / 1e6 if ms else 0.0]
                           for (d, s), (n, ms, fl) in convs.items()), key=lambda r: -r[3])}


def report(summary: dict, top: int = 20) -> str:
  total = summary["total_ms"]
  lines = [f"op time: {total:.1f} ms per step", "ms/step  share  ops/step  kind"]
  for kind, n, ms in summary["kinds"][:top]:
    lines.append(f"{ms:7.2f}  {100 * ms / total:5.1f}%  {n:4d}  {kind}")
  lines += ["", "oneDNN convolutions (ms/step, count, GFLOP/s): direction, input -> output, kernel"]
  for direction, shape, n, ms, gflops in summary["convs"]:
    lines.append(f"{ms:7.2f}  x{n:<2d} {gflops:6.1f}  {direction:16s} {shape}")
  return "\n".join(lines)


def trace_step(config_name: str, batch: int, steps: int, trace_dir: str) -> str:
  import ddpm  # noqa: F401  (first: the XLA CPU flags)
  import jax
  from flax import jax_utils

  from ddpm.diffusion import schedules
  from ddpm.runtime import replicas
  from ddpm.training import train_step
  from onednn_ab import make_config, random_device_batches

  config = make_config(config_name, batch)
  model, tx, lr_fn, state, _ = train_step.initial_state(config)
  rstate = jax_utils.replicate(state, axis_name=replicas.AXIS)
  batches = random_device_batches(config, batch)
  schedule = schedules.schedule_from_config(config.diffusion)
  step = train_step.make_p_train_step(model, schedule, tx, lr_fn, config).lower(
      rstate, batches[0]).compile()
  for i in range(3):  # Warm-up.
    rstate, metrics = step(rstate, batches[i % 4])
    jax.block_until_ready(metrics)
  jax.profiler.start_trace(trace_dir)
  for i in range(steps):
    rstate, metrics = step(rstate, batches[i % 4])
    jax.block_until_ready(metrics)
  jax.profiler.stop_trace()
  hlo = step.as_text()
  with open(os.path.join(trace_dir, "step.hlo.txt"), "w") as f:
    f.write(hlo)
  return hlo


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--config", choices=("mnist", "benchmark"), default="mnist")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--trace", default="", help="re-read this trace folder (step.hlo.txt beside it)")
  p.add_argument("--out", default="/tmp/ddpm_profile_step")
  p.add_argument("--json", default="", help="also write the summary here")
  args = p.parse_args()
  if args.trace:
    trace_dir = args.trace
    with open(os.path.join(trace_dir, "step.hlo.txt")) as f:
      hlo = f.read()
  else:
    trace_dir = args.out
    hlo = trace_step(args.config, args.batch, args.steps, trace_dir)
  summary = summarize(trace_dir, hlo, args.steps)
  print(report(summary))
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"config": args.config, "batch": args.batch, "steps": args.steps, **summary}, f,
                indent=1)


if __name__ == "__main__":
  main()
