"""One measurement of ddpm (runs with the Python that has ddpm installed, from the repository root).

  PYTHONPATH=. python experiments/benchmark/ours.py --task train --batch 64
  PYTHONPATH=. python experiments/benchmark/ours.py --task sample --batch 64 --sample-steps 20,50

Prints one JSON line (the last line of stdout); progress goes to stderr. run_all.py runs every
configuration in its own process, so the peak RSS is that configuration's.

The real code path: configs/benchmark.py (the matched workload), `ddpm.training.train_step.initial_state`
and `ddpm.training.train_step.make_p_train_step` (pmap over the local devices, state donated, replicated and
batches sharded on the trainer's mesh axis as `Trainer.run` does), and
`ddpm.pipelines.generation.make_generate_fn` (DDIM, eta 0, from the EMA parameters). The data are random
images in [-1, 1] already on the device, as the peers' are (real data loading is not what is
measured).

Compile times are ahead-of-time `lower(...).compile()` of the very function that then runs;
"first step" is compile plus the first execution, comparable to the peers' first step.
FLOPs per image, at the run's batch: XLA's cost analysis of the compiled forward (train=False)
and of the whole compiled train step (forward, backward, Adam, EMA); and the count the peers'
torch FlopCounterMode makes (2 x multiply-adds of matmuls and convolutions, padding taps
included, no element-wise work), taken from the forward's jaxpr. XLA's figure is reported, but
achieved GFLOP/s = 3 x forward FLOPs x images/s (backward ~ 2 x forward) uses the count, the
same convention as the peers', so the GFLOP/s of ddpm and of the peers compare like with like
(`achieved_gflops_xla` has XLA's). XLA's cost analysis cannot see into a custom call, so with
the oneDNN convolutions (ddpm.kernels.conv; `convolutions` in the JSON says which ran) the FLOPs
per image are counted on the lax variant of the program, and `train_flops_per_image_xla` of the
compiled step leaves the convolutions out.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import sys
import time

import ddpm  # noqa: F401  (first: ddpm/runtime/xla_flags.py sets its XLA CPU flags before JAX starts)
import jax
import jax.numpy as jnp
import numpy as np
from ddpm.kernels import conv as kernels_conv

from bench_util import log, peak_rss_mb, timed  # noqa: E402


def flops_of(compiled) -> float:
  """Total 'flops' of a compiled executable's XLA cost analysis (a dict or a list of dicts)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    return float(sum(c.get("flops", 0.0) for c in cost))
  return float(cost.get("flops", 0.0))


def benchmark_config(args):
  """configs/benchmark.py at the run's image size and batch; attention at the lowest level."""
  from configs import benchmark
  from ddpm.jobs import config_validation
  config = benchmark.get_config()
  config.data.image_size = args.image_size
  config.data.channels = args.channels
  if args.image_size != 32:  # The sweep: keep attention at the lowest resolution.
    levels = len(config.model.ch_mult) - 1
    config.model.attn_resolutions = (args.image_size // 2 ** levels,)
    config.data.resize_method = "none" if args.image_size == 28 else "resize"
  config.model.dtype = args.dtype
  config.training.batch_size = args.batch
  config.sampling.batch_size = args.batch
  config_validation.validate_config(config)
  return config


def matmul_conv_flops(jaxpr) -> int:
  """2 x multiply-adds of every dot_general and conv_general_dilated in `jaxpr` (and the
  jaxprs inside it): what torch's FlopCounterMode counts for the peers (matrix multiplies,
  convolutions and attention, every tap of a padded convolution, no element-wise work)."""
  import math
  from jax.extend import core as jcore
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    out = eqn.outvars[0].aval.shape
    if name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2 * math.prod(out) * math.prod(lhs[i] for i in contract)
    elif name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, spatial...)
      taps = rhs[spec[1]] * math.prod(rhs[i] for i in spec[2:])
      total += 2 * math.prod(out) * taps
    for v in eqn.params.values():
      for sub in (v if isinstance(v, (list, tuple)) else (v,)):
        if isinstance(sub, jcore.ClosedJaxpr):
          total += matmul_conv_flops(sub.jaxpr)
        elif isinstance(sub, jcore.Jaxpr):
          total += matmul_conv_flops(sub)
  return total


@contextlib.contextmanager
def lax_convolutions():
  """Traces inside it use lax convolutions, not the oneDNN custom call (ddpm.kernels.conv
  reads DDPM_NO_ONEDNN at trace time): for FLOP counts, which cannot see into a custom call,
  and for A/B runs of both variants in one process."""
  old = os.environ.get("DDPM_NO_ONEDNN")
  os.environ["DDPM_NO_ONEDNN"] = "1"
  try:
    yield
  finally:
    if old is None:
      del os.environ["DDPM_NO_ONEDNN"]
    else:
      os.environ["DDPM_NO_ONEDNN"] = old


def forward_flops(model, params, args) -> tuple[float, float]:
  """Forward FLOPs per image: (XLA's cost analysis of the jit-compiled forward, the
  matmul + conv count of its jaxpr, torch's FlopCounterMode convention).

  XLA counts element-wise work too but leaves out the taps of a convolution that fall on its
  zero padding, so on this small U-Net (8x8 maps) it comes out about 5 % below the count.
  Both come from the program with lax convolutions: the math's FLOPs, whichever kernel runs.
  """
  fwd = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t, train=False))
  x = jnp.zeros((args.batch, args.image_size, args.image_size, args.channels), jnp.float32)
  t = jnp.zeros((args.batch,), jnp.int32)
  with lax_convolutions():
    xla = flops_of(fwd.lower(params, x, t).compile()) / args.batch
    counted = matmul_conv_flops(jax.make_jaxpr(fwd)(params, x, t).jaxpr) / args.batch
  return xla, counted


def run_train(args, config, model, state, tx, lr_fn, schedule) -> dict:
  from flax import jax_utils
  from ddpm.data import input_pipeline
  from ddpm.runtime import replicas
  from ddpm.training import train_step
  n_dev = jax.local_device_count()
  per_device = input_pipeline.local_batch_size(args.batch) // n_dev
  rng = np.random.default_rng(0)
  shape = (n_dev, per_device, args.image_size, args.image_size, args.channels)
  host = [{"image": rng.uniform(-1, 1, shape).astype(np.float32)} for _ in range(4)]
  # Sharded on the trainer's mesh axis, as Trainer.run's prefetch_to_device does.
  batches = list(jax_utils.prefetch_to_device(iter(host), 2, axis_name=replicas.AXIS))
  rstate = jax_utils.replicate(state, axis_name=replicas.AXIS)
  p_train_step = train_step.make_p_train_step(model, schedule, tx, lr_fn, config)

  t0 = time.perf_counter()
  compiled = p_train_step.lower(rstate, batches[0]).compile()
  compile_s = time.perf_counter() - t0
  train_flops = flops_of(compiled) / args.batch
  step_fn = compiled
  log(f"train step compiled in {compile_s:.2f} s, XLA: {train_flops / 1e9:.3f} GFLOP per image")

  holder = {"state": rstate}

  def step(i):
    holder["state"], metrics = step_fn(holder["state"], batches[i % len(batches)])
    jax.block_until_ready((holder["state"], metrics))
    return metrics

  first_exec = timed(lambda: step(0))
  log(f"first step {compile_s + first_exec:.2f} s (compile {compile_s:.2f} s)")
  for i in range(args.warmup):
    step(1 + i)
  times = [timed(lambda i=i: step(1 + args.warmup + i)) for i in range(args.steps)]
  loss = float(step(0)["loss"][0])  # One more step: the loss is finite (the step really ran).
  med = statistics.median(times)
  log(f"train: median step {med:.4f} s over {len(times)} steps, {args.batch / med:.1f} img/s, "
      f"loss {loss:.4f}")
  return {"compile_s": compile_s, "first_step_s": compile_s + first_exec,
          "step_s_median": med, "step_s_mean": statistics.fmean(times), "step_s": times,
          "images_per_s": args.batch / med, "train_flops_per_image_xla": train_flops,
          "loss_after": loss}


def run_sample(args, config, model, state, schedule) -> dict:
  from flax import jax_utils
  from ddpm.models import build
  from ddpm.pipelines import generation
  from ddpm.runtime import replicas
  n_dev = jax.local_device_count()
  per_device = -(-args.batch // n_dev)
  rparams = jax_utils.replicate(state.ema_params, axis_name=replicas.AXIS)
  key = jax.random.PRNGKey(0)
  ids = jnp.arange(per_device * n_dev)
  keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(ids).reshape((n_dev, per_device, -1))
  labels = np.zeros((n_dev, per_device), np.int32)
  out = {}
  for n in args.sample_steps:
    s = config.sampling.copy_and_resolve_references()
    s.num_steps = n
    fn = generation.make_generate_fn(model, schedule, s, config.diffusion, per_device,
                                     build.image_shape(config))
    t0 = time.perf_counter()
    compiled = fn.lower(rparams, keys, labels).compile()
    compile_s = time.perf_counter() - t0
    runs = [timed(lambda: jax.block_until_ready(compiled(rparams, keys, labels)))
            for _ in range(args.sample_repeats + 1)]
    run_s = statistics.median(runs[1:])
    out[str(n)] = {"compile_s": compile_s, "first_run_s": runs[0], "run_s": run_s,
                   "s_per_step": run_s / n}
    log(f"sample {n} steps: compile {compile_s:.2f} s, {run_s:.2f} s ({run_s / n:.4f} s/step)")
  largest = str(max(args.sample_steps))
  return {"sample": out, "sample_s_per_step": out[largest]["s_per_step"],
          "sample_compile_s": {n: v["compile_s"] for n, v in out.items()}}


def run_matmul(args) -> dict:
  """jit-compiled fp32 matmul GFLOP/s: the machine's reference peak for this benchmark."""
  n = args.matmul_size
  ka, kb = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(ka, (n, n), jnp.float32)
  b = jax.random.normal(kb, (n, n), jnp.float32)
  f = jax.jit(jnp.matmul)
  for _ in range(2):
    f(a, b).block_until_ready()
  times = [timed(lambda: f(a, b).block_until_ready()) for _ in range(args.steps)]
  med = statistics.median(times)
  return {"matmul_size": n, "step_s_median": med, "gflops": 2 * n ** 3 / med / 1e9}


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--task", choices=("train", "sample", "flops", "matmul"), default="train")
  p.add_argument("--mode", default="jit", help="label only: run_all.py sets jit-eigen's "
                 "environment (DDPM_NO_XLA_CPU_FLAGS=1)")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--image-size", type=int, default=32)
  p.add_argument("--channels", type=int, default=1)
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  p.add_argument("--warmup", type=int, default=3, help="untimed steps after the first")
  p.add_argument("--steps", type=int, default=15, help="timed steps (median)")
  p.add_argument("--sample-steps", type=lambda s: [int(v) for v in s.split(",")],
                 default=[20, 50], help="comma-separated DDIM step counts")
  p.add_argument("--sample-repeats", type=int, default=2, help="timed sampler runs (median)")
  p.add_argument("--matmul-size", type=int, default=2048)
  args = p.parse_args(argv)
  # Compile times must include the compilation: never load executables from a disk cache.
  jax.config.update("jax_enable_compilation_cache", False)

  result = {"impl": "ddpm", "mode": args.mode, "task": args.task, "batch": args.batch,
            "image_size": args.image_size, "channels": args.channels, "dtype": args.dtype,
            "jax": jax.__version__, "backend": jax.default_backend(),
            "devices": jax.local_device_count(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "convolutions": kernels_conv.status()}
  if args.task == "matmul":
    result.update(run_matmul(args))
  else:
    from ddpm.diffusion import schedules
    from ddpm.training import train_step
    config = benchmark_config(args)
    model, tx, lr_fn, state, _ = train_step.initial_state(config)
    schedule = schedules.schedule_from_config(config.diffusion)
    result["params"] = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(state.params)))
    xla, counted = forward_flops(model, state.params, args)
    result.update(fwd_flops_per_image_xla=xla, fwd_flops_per_image=counted,
                  flops_source="jaxpr matmul+conv count (FlopCounterMode's convention)")
    log(f"ddpm: {result['params']:,} parameters, forward per image {xla / 1e9:.3f} GFLOP (XLA "
        f"cost analysis), {counted / 1e9:.3f} GFLOP (matmul + conv count)")
    if args.task == "train":
      result.update(run_train(args, config, model, state, tx, lr_fn, schedule))
      result["achieved_gflops"] = 3 * counted * result["images_per_s"] / 1e9
      result["achieved_gflops_xla"] = 3 * xla * result["images_per_s"] / 1e9
    elif args.task == "sample":
      result.update(run_sample(args, config, model, state, schedule))
  result["peak_rss_mb"], result["peak_rss_children_mb"] = peak_rss_mb()
  print(json.dumps(result), flush=True)
  return result


if __name__ == "__main__":
  main()
