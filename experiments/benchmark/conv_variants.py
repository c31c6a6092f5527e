"""One lever measured: a 3x3 convolution as im2col (9 shifted slices concatenated) + one matmul,
against lax.conv_general_dilated, forward and forward + backward, batch 64, float32.

  python experiments/benchmark/conv_variants.py

Result in experiments/benchmark/PROFILE.md: im2col loses (the 9x patch tensor is memory-bound).
"""
import os
# As recorded in PROFILE.md: XLA's default (Eigen) convolutions, which profile_ops' `import ddpm`
# would otherwise replace by YNNPACK's (ddpm/runtime/xla_flags.py). Run with =0 to compare under YNN.
os.environ.setdefault("DDPM_NO_XLA_CPU_FLAGS", "1")
import jax, jax.numpy as jnp
from profile_ops import timeit as t  # median of 10 after 2 warm-up calls
def conv(x,w): return jax.lax.conv_general_dilated(x,w,(1,1),"SAME",dimension_numbers=("NHWC","HWIO","NHWC"))
def im2col(x,w):
  B,H,W,C=x.shape; xp=jnp.pad(x,((0,0),(1,1),(1,1),(0,0)))
  cols=jnp.concatenate([xp[:,i:i+H,j:j+W,:] for i in range(3) for j in range(3)],-1)
  return (cols.reshape(B*H*W,9*C)@w.reshape(9*C,-1)).reshape(B,H,W,-1)
for (H,Ci,Co) in [(32,32,32),(16,64,64),(32,64,64)]:
  x=jax.random.normal(jax.random.PRNGKey(0),(64,H,H,Ci)); w=jax.random.normal(jax.random.PRNGKey(1),(3,3,Ci,Co))*0.1
  fl=2*64*H*H*9*Ci*Co
  for name,f in (("lax.conv",conv),("im2col",im2col)):
    fwd=jax.jit(f); g=jax.jit(jax.grad(lambda x,w: jnp.sum(f(x,w)**2),argnums=(0,1)))
    a=t(fwd,x,w); b=t(g,x,w)
    print(f"{H}x{H} {Ci}->{Co} {name:8s} fwd {a*1e3:6.2f} ms {fl/a/1e9:6.1f} GF/s  fwd+bwd {b*1e3:7.2f} ms {3*fl/b/1e9:6.1f} GF/s", flush=True)
