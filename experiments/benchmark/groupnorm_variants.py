"""Lever measured: GroupNorm's share of the U-Net forward, in the compiled graph.

  python experiments/benchmark/groupnorm_variants.py flax     # the model as it is
  python experiments/benchmark/groupnorm_variants.py custom   # per-channel sums, then groups
  python experiments/benchmark/groupnorm_variants.py nonorm   # GroupNorm replaced by identity

configs/benchmark.py's U-Net, batch 64, float32, the package's XLA flags: one jit-compiled
forward (median of 8), and 10 forwards chained in one lax.scan as the sampler runs them.
Result in experiments/benchmark/PROFILE.md.
"""
import pathlib, sys
import ddpm
import jax, jax.numpy as jnp, flax.linen as nn
from ddpm.models import unet
from ddpm.training import train_step
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from configs import benchmark
from profile_ops import timeit  # median after 2 warm-up calls

class CustomGN(nn.Module):
  num_groups: int
  dtype: object = jnp.float32
  epsilon: float = 1e-6
  @nn.compact
  def __call__(self, x):
    B,H,W,C = x.shape; G=self.num_groups; n=H*W*(C//G)
    scale=self.param("scale", nn.initializers.ones, (C,)); bias=self.param("bias", nn.initializers.zeros, (C,))
    xf=x.astype(jnp.float32)
    s1=jnp.sum(xf,axis=(1,2)); s2=jnp.sum(xf*xf,axis=(1,2))
    m=s1.reshape(B,G,-1).sum(-1)/n; v=jnp.maximum(0.,s2.reshape(B,G,-1).sum(-1)/n-m*m)
    inv=jax.lax.rsqrt(v+self.epsilon)
    a=jnp.repeat(inv,C//G,axis=1)*scale; b=bias-jnp.repeat(m*inv,C//G,axis=1)*scale
    return (xf*a[:,None,None,:]+b[:,None,None,:]).astype(self.dtype)

class NoGN(nn.Module):
  num_groups: int
  dtype: object = jnp.float32
  @nn.compact
  def __call__(self, x): return x
if sys.argv[1] == "nonorm":
  unet._norm = lambda g, dt, name=None: NoGN(num_groups=g, dtype=dt, name=name)
if sys.argv[1] == "custom":
  unet._norm = lambda g, dt, name=None: CustomGN(num_groups=g, dtype=dt, name=name)
cfg = benchmark.get_config()
model, tx, lr_fn, state, _ = train_step.initial_state(cfg)
B = 64
x = jax.random.normal(jax.random.PRNGKey(0), (B, 32, 32, 1)); t = jnp.full((B,), 500)
params = state.params
f = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t, train=False))
def loop(p, x):  # 10 forwards in one executable, as in the sampler's scan
  def body(c, i): return c + 0.01 * model.apply({"params": p}, c, t, train=False), None
  return jax.lax.scan(body, x, jnp.arange(10))[0]
g = jax.jit(loop)
fwd = timeit(f, params, x, t, repeats=8)
in_scan = timeit(g, params, x, repeats=3) / 10
print(sys.argv[1], f"fwd {fwd*1e3:.1f} ms  in-scan {in_scan*1e3:.1f} ms/fwd")
