"""Issue 15, lever 2: the whole train step with oneDNN convolutions (ddpm.kernels.conv)
against the same step with lax (XLA) convolutions, both compiled in one process and timed in
alternating rounds, so the machine's noise falls on both alike.

  PYTHONPATH=. python experiments/benchmark/onednn_ab.py --config mnist --rounds 6 --steps 8
  PYTHONPATH=. python experiments/benchmark/onednn_ab.py --config benchmark --batch 64

--config mnist is configs/mnist.py (the README's run: its U-Net, batch 64), --config benchmark
is configs/benchmark.py (the U-Net matched with diffusers). The step is the trainer's own
(`ddpm.training.train_step.make_p_train_step`, pmap over the local devices, state donated) on
random images already on the device. Each round runs `--steps` steps of each variant (order
alternating); the summary is the median step time per variant and the ratio. The first step's
loss of both variants from the same state is printed too (they agree to float32 rounding).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import ddpm  # noqa: F401  (first: the XLA CPU flags)
import jax
import numpy as np
from flax import jax_utils

from ours import lax_convolutions  # noqa: E402


def make_config(name: str, batch: int):
  from ddpm.jobs import config_validation
  if name == "mnist":
    from configs import mnist as module
  else:
    from configs import benchmark as module
  config = module.get_config()
  config.training.batch_size = batch
  config_validation.validate_config(config)
  return config


def random_device_batches(config, batch: int, count: int = 4) -> list:
  """`count` batches of uniform random images in [-1, 1] (and random labels for a conditional
  model), split over the local devices as the trainer's pmap step takes them."""
  from ddpm.data import input_pipeline
  from ddpm.models import build
  from ddpm.runtime import replicas
  n_dev = jax.local_device_count()
  per_device = input_pipeline.local_batch_size(batch) // n_dev
  shape = (n_dev, per_device, *build.image_shape(config))
  rng = np.random.default_rng(0)
  host = [{"image": rng.uniform(-1, 1, shape).astype(np.float32)} for _ in range(count)]
  if config.model.num_classes:
    for b in host:
      b["label"] = rng.integers(0, config.model.num_classes, shape[:2]).astype(np.int32)
  return list(jax_utils.prefetch_to_device(iter(host), 2, axis_name=replicas.AXIS))


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--config", choices=("mnist", "benchmark"), default="mnist")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--rounds", type=int, default=6)
  p.add_argument("--steps", type=int, default=8)
  args = p.parse_args()
  jax.config.update("jax_enable_compilation_cache", False)
  from ddpm.diffusion import schedules
  from ddpm.kernels import conv
  from ddpm.runtime import replicas
  from ddpm.training import train_step
  print(conv.status(), flush=True)
  assert conv.available(), "build the extension first (pip install -e . with libdnnl-dev)"
  config = make_config(args.config, args.batch)
  model, tx, lr_fn, state, _ = train_step.initial_state(config)
  schedule = schedules.schedule_from_config(config.diffusion)
  batches = random_device_batches(config, args.batch)

  variants = {}
  for name in ("lax", "onednn"):
    rstate = jax_utils.replicate(state, axis_name=replicas.AXIS)
    fn = train_step.make_p_train_step(model, schedule, tx, lr_fn, config)
    t0 = time.perf_counter()
    if name == "lax":
      with lax_convolutions():
        compiled = fn.lower(rstate, batches[0]).compile()
    else:
      compiled = fn.lower(rstate, batches[0]).compile()
    compile_s = time.perf_counter() - t0
    hlo = compiled.as_text()
    assert ("ddpm_onednn_conv" in hlo) == (name == "onednn"), name
    rstate, metrics = compiled(rstate, batches[0])
    loss = float(np.asarray(metrics["loss"]).ravel()[0])
    variants[name] = {"fn": compiled, "state": rstate, "times": [], "compile_s": compile_s,
                      "first_loss": loss}
    print(f"{name}: compiled in {compile_s:.1f} s, first-step loss {loss!r}", flush=True)

  for r in range(args.rounds):
    order = ("lax", "onednn") if r % 2 == 0 else ("onednn", "lax")
    for name in order:
      v = variants[name]
      for i in range(args.steps + 1):
        t0 = time.perf_counter()
        v["state"], metrics = v["fn"](v["state"], batches[i % len(batches)])
        jax.block_until_ready((v["state"], metrics))
        if i:  # The first step of a round: warm-up after the other variant ran.
          v["times"].append(time.perf_counter() - t0)
    print(f"round {r}: " + ", ".join(
        f"{n} {statistics.median(variants[n]['times'][-args.steps:]):.4f} s/step"
        for n in ("lax", "onednn")), flush=True)
  med = {n: statistics.median(v["times"]) for n, v in variants.items()}
  summary = {"config": args.config, "batch": args.batch, "rounds": args.rounds,
             "steps_per_round": args.steps, "status": conv.status(),
             **{f"{n}_step_s": med[n] for n in med},
             **{f"{n}_images_per_s": args.batch / med[n] for n in med},
             **{f"{n}_compile_s": variants[n]["compile_s"] for n in med},
             **{f"{n}_first_loss": variants[n]["first_loss"] for n in med},
             "speedup": med["lax"] / med["onednn"]}
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  main()
