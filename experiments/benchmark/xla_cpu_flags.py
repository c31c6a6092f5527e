"""Levers measured: XLA CPU flags (and bfloat16) on the U-Net's two most common 3x3 convolutions.

  python experiments/benchmark/xla_cpu_flags.py

Each variant runs in its own process (XLA reads XLA_FLAGS once, when the backend starts), with
DDPM_NO_XLA_CPU_FLAGS=1 so that only the variant's flags apply: batch 64, NHWC, 'SAME'
padding, forward and forward + backward (input and weight gradients), median of 8 runs, plus
a 2048^2 matmul as the reference peak. GFLOP/s = 2 x multiply-adds (backward = 2 x forward).
Result and reading in experiments/benchmark/PROFILE.md; the winner is what ddpm/runtime/xla_flags.py
sets.
"""

import os
import subprocess
import sys

VARIANTS = [
    ("XLA default (Eigen)", "", "float32"),
    ("ynn_fusion_type=dot", "--xla_cpu_experimental_ynn_fusion_type=dot", "float32"),
    ("ynn_fusion_type=dot,eltwise", "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise",
     "float32"),
    ("ynn_fusion_type=dot,eltwise,reduce",
     "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce", "float32"),
    ("xnn_fusion_type=dot", "--xla_cpu_experimental_xnn_fusion_type=dot", "float32"),
    ("use_onednn=true", "--xla_cpu_use_onednn=true", "float32"),
    ("bfloat16, XLA default", "", "bfloat16"),
    ("bfloat16, ynn_fusion_type=dot", "--xla_cpu_experimental_ynn_fusion_type=dot", "bfloat16"),
]

CHILD = r"""
import sys
import jax, jax.numpy as jnp
from profile_ops import timeit  # run with cwd = this folder
t = lambda fn, *a: timeit(fn, *a, repeats=8)
dt = jnp.dtype(sys.argv[1])
def conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
out = []
for (h, ci, co) in [(32, 32, 32), (16, 64, 64)]:
  x = jax.random.normal(jax.random.PRNGKey(0), (64, h, h, ci)).astype(dt)
  w = (0.1 * jax.random.normal(jax.random.PRNGKey(1), (3, 3, ci, co))).astype(dt)
  fl = 2 * 64 * h * h * 9 * ci * co
  g = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w).astype(jnp.float32) ** 2),
                       argnums=(0, 1)))
  a, b = t(jax.jit(conv), x, w), t(g, x, w)
  out.append(f"{h}x{h} {ci}->{co}: fwd {fl / a / 1e9:5.1f}, fwd+bwd {3 * fl / b / 1e9:5.1f}")
m = jax.random.normal(jax.random.PRNGKey(0), (2048, 2048)).astype(dt)
s = t(jax.jit(lambda a: a @ a), m)
print(" | ".join(out) + f" | matmul {2 * 2048 ** 3 / s / 1e9:5.1f}")
"""


def main():
  print("GFLOP/s, batch 64:")
  for name, flags, dtype in VARIANTS:
    env = dict(os.environ, XLA_FLAGS=flags, DDPM_NO_XLA_CPU_FLAGS="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", CHILD, dtype], env=env, capture_output=True,
                          text=True, timeout=900, cwd=os.path.dirname(os.path.abspath(__file__)))
    line = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    if proc.returncode:
      line = f"failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}"
    print(f"{name:36s} {line}", flush=True)


if __name__ == "__main__":
  main()
