r"""Where the train step's time goes: each kind of layer of the matched U-Net, timed alone.

For every distinct layer shape of configs/benchmark.py's U-Net at a batch (default 64), this
jit-compiles the layer's forward and its forward + backward (gradients of a scalar with
respect to the input and the weights, as in training), times them (median of repeats after
warm-up) and reports GFLOP/s against the matmul/conv count (2 x multiply-adds; backward = 2 x
forward for convolutions and matmuls). Multiplied by how often each shape occurs in the
U-Net, the rows add up to an estimate of the whole step, next to the measured step.

  PYTHONPATH=. python experiments/benchmark/profile_ops.py [--batch 64] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time

import ddpm  # noqa: F401  (first: its XLA CPU flags, ddpm/runtime/xla_flags.py, before JAX starts)
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def timeit(fn, *args, repeats: int = 10) -> float:
  jax.block_until_ready(fn(*args))
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def layer_inventory(config):
  """(kind, shape key) -> count of the U-Net's layers, from the model's own structure."""
  from ddpm.models import build
  model = build.create_model(config)
  b = 1
  s = config.data.image_size
  x = jnp.zeros((b, s, s, config.data.channels))
  t = jnp.zeros((b,), jnp.int32)
  counts = collections.Counter()

  def interceptor(next_fun, args, kwargs, context):
    mod = context.module
    if context.method_name == "__call__":
      inp = args[0]
      if isinstance(mod, nn.Conv):
        counts[("conv", inp.shape[1], inp.shape[-1], mod.features, mod.kernel_size[0],
                (mod.strides or (1, 1))[0] if isinstance(mod.strides, (tuple, list)) else (mod.strides or 1))] += 1
      elif isinstance(mod, nn.GroupNorm):
        counts[("groupnorm", inp.shape[1], inp.shape[-1], mod.num_groups)] += 1
      elif type(mod).__name__ == "AttnBlock":
        counts[("attention", inp.shape[1], inp.shape[-1])] += 1
    return next_fun(*args, **kwargs)

  params = model.init(jax.random.PRNGKey(0), x, t)
  with nn.intercept_methods(interceptor):
    model.apply(params, x, t)
  return counts


def bench_conv(batch, hw, cin, cout, k, stride, dtype):
  key = jax.random.PRNGKey(0)
  x = jax.random.normal(key, (batch, hw, hw, cin), dtype)
  w = jax.random.normal(key, (k, k, cin, cout), dtype) * 0.1
  conv = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  fwd = jax.jit(conv)
  grad = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1)))
  out_hw = hw // stride
  flops = 2 * batch * out_hw * out_hw * cout * cin * k * k
  return timeit(fwd, x, w), timeit(grad, x, w), flops


def bench_groupnorm(batch, hw, c, groups, dtype):
  m = nn.GroupNorm(num_groups=groups, dtype=dtype)
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, hw, hw, c), dtype)
  p = m.init(jax.random.PRNGKey(1), x)
  f = lambda p, x: nn.silu(m.apply(p, x))
  fwd = jax.jit(f)
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(f(p, x) ** 2), argnums=(0, 1)))
  return timeit(fwd, p, x), timeit(grad, p, x), 0


def bench_attention(batch, hw, c, dtype):
  from ddpm.models.unet import AttnBlock
  m = AttnBlock(num_groups=32 if c % 32 == 0 else 8, dtype=dtype)
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, hw, hw, c), dtype)
  p = m.init(jax.random.PRNGKey(1), x)
  fwd = jax.jit(lambda p, x: m.apply(p, x))
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(m.apply(p, x) ** 2), argnums=(0, 1)))
  n = hw * hw
  flops = 2 * batch * (n * c * 3 * c + 2 * n * n * c + n * c * c)  # qkv, scores+values, out.
  return timeit(fwd, p, x), timeit(grad, p, x), flops


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--out", default="")
  args = p.parse_args()
  sys.path.insert(0, ".")
  from configs import benchmark
  config = benchmark.get_config()
  dtype = jnp.dtype(args.dtype)
  rows = []
  for key, count in sorted(layer_inventory(config).items(), key=str):
    kind = key[0]
    if kind == "conv":
      _, hw, cin, cout, k, stride = key
      f, g, flops = bench_conv(args.batch, hw, cin, cout, k, stride, dtype)
      name = f"conv{k}x{k} {hw}x{hw} {cin}->{cout}" + (f" stride {stride}" if stride != 1 else "")
    elif kind == "groupnorm":
      _, hw, c, groups = key
      f, g, flops = bench_groupnorm(args.batch, hw, c, groups, dtype)
      name = f"groupnorm+silu {hw}x{hw}x{c}"
    else:
      _, hw, c = key
      f, g, flops = bench_attention(args.batch, hw, c, dtype)
      name = f"attention block {hw}x{hw}x{c}"
    row = dict(layer=name, count=count, fwd_s=f, fwd_bwd_s=g, fwd_gflop=flops / 1e9,
               fwd_gflops_per_s=flops / f / 1e9 if flops else None,
               fwd_bwd_gflops_per_s=3 * flops / g / 1e9 if flops else None,
               share_s=count * g)
    rows.append(row)
    print(f"{name:38s} x{count:2d}  fwd {1e3 * f:7.2f} ms"
          + (f" ({row['fwd_gflops_per_s']:5.1f} GFLOP/s)" if flops else " " * 17)
          + f"  fwd+bwd {1e3 * g:7.2f} ms"
          + (f" ({row['fwd_bwd_gflops_per_s']:5.1f} GFLOP/s)" if flops else ""), flush=True)
  total = sum(r["share_s"] for r in rows)
  print(f"sum over layers of count x fwd+bwd: {total:.3f} s per step of batch {args.batch} "
        f"({args.batch / total:.1f} img/s if nothing else cost anything)")
  for r in sorted(rows, key=lambda r: -r["share_s"])[:8]:
    print(f"  {100 * r['share_s'] / total:5.1f}%  {r['layer']}")
  if args.out:
    with open(args.out, "w") as fh:
      json.dump(dict(batch=args.batch, dtype=args.dtype, rows=rows, total_s=total,
                     jax=jax.__version__), fh, indent=1)


if __name__ == "__main__":
  main()
