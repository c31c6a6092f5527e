"""Per-layer GFLOP/s of the U-Nets' 3x3 convolutions: oneDNN (ddpm.kernels.conv) against lax
(XLA:CPU with ddpm's flags), forward and both gradients, timed in alternating rounds.

  PYTHONPATH=.:experiments/benchmark python experiments/benchmark/onednn_layers.py

FLOPs are 2 x multiply-adds with every tap counted (torch's FlopCounterMode convention, as in
ours.py); the gradients (of <conv(x, w), g> with respect to x and w, which need no forward:
XLA drops it) count 2x the forward. Prints one line per layer and variant and
a JSON line with everything.
"""

from __future__ import annotations

import argparse
import json
import statistics

import ddpm  # noqa: F401  (first: the XLA CPU flags)
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ddpm.kernels import conv
from profile_ops import timeit  # noqa: E402

NHWC = ("NHWC", "HWIO", "NHWC")
# (batch, H, W, C_in, C_out, stride): configs/mnist.py (ch 16, mult 1,2,2 at 28/14/7) and
# configs/benchmark.py (ch 32 at 32x32, 64 at 16 and 8) layers at batch 64.
LAYERS = [(64, 28, 28, 16, 16, 1), (64, 14, 14, 32, 32, 1), (64, 7, 7, 32, 32, 1),
          (64, 28, 28, 16, 16, 2), (64, 32, 32, 32, 32, 1), (64, 16, 16, 64, 64, 1),
          (64, 8, 8, 64, 64, 1), (64, 28, 28, 1, 16, 1)]


def make(fn_conv, strides):
  fwd = jax.jit(lambda x, w: fn_conv(x, w, strides, "SAME", dimension_numbers=NHWC))
  both = jax.jit(jax.grad(
      lambda x, w, g: jnp.sum(fn_conv(x, w, strides, "SAME", dimension_numbers=NHWC) * g),
      argnums=(0, 1)))
  return fwd, both


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args()
  assert conv.available(), conv.status()
  print(conv.status(), flush=True)
  rng = np.random.default_rng(0)
  results = []
  for n, h, w, c, o, s in LAYERS:
    x = jnp.asarray(rng.standard_normal((n, h, w, c), dtype=np.float32))
    k = jnp.asarray(rng.standard_normal((3, 3, c, o), dtype=np.float32))
    oh, ow = -(-h // s), -(-w // s)
    g = jnp.asarray(rng.standard_normal((n, oh, ow, o), dtype=np.float32))
    flops = 2 * n * oh * ow * o * 9 * c
    variants = {"lax": make(lax.conv_general_dilated, (s, s)),
                "onednn": make(conv.conv_general_dilated, (s, s))}
    t = {name: {"fwd": [], "grads": []} for name in variants}
    for r in range(args.rounds):
      for name in (("lax", "onednn") if r % 2 == 0 else ("onednn", "lax")):
        fwd, both = variants[name]
        t[name]["fwd"].append(timeit(fwd, x, k, repeats=args.repeats))
        t[name]["grads"].append(timeit(both, x, k, g, repeats=args.repeats))
    for name in variants:
      fwd_s, both_s = statistics.median(t[name]["fwd"]), statistics.median(t[name]["grads"])
      row = dict(layer=f"{n}x{h}x{w}x{c}->{o} s{s}", impl=name, fwd_ms=1e3 * fwd_s,
                 grads_ms=1e3 * both_s, fwd_gflops=flops / fwd_s / 1e9,
                 grads_gflops=2 * flops / both_s / 1e9)
      results.append(row)
      print(f"{row['layer']:24s} {name:7s} fwd {row['fwd_ms']:7.2f} ms "
            f"{row['fwd_gflops']:6.1f} GFLOP/s   grads {row['grads_ms']:7.2f} ms "
            f"{row['grads_gflops']:6.1f} GFLOP/s", flush=True)
  print(json.dumps({"status": conv.status(), "layers": results}), flush=True)


if __name__ == "__main__":
  main()
