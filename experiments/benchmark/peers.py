"""One measurement of a PyTorch peer (runs in the peers' venv, see setup_peers.sh).

  .venv/bin/python peers.py --impl diffusers --mode eager --task train --batch 64
  .venv/bin/python peers.py --impl lucidrains --mode compile --task sample --batch 64

Prints one JSON line (the last line of stdout); progress goes to stderr. run_all.py runs every
configuration in its own process, so the peak RSS is that configuration's.

Peers (the matched workload of experiments/benchmark/README.md):
  diffusers:  UNet2DModel(block_out_channels=(32, 64, 64), layers_per_block=2), attention at
              the lowest resolution only (DownBlock2D, DownBlock2D, AttnDownBlock2D and the
              mirror), one attention head (attention_head_dim=None, as ours), dropout 0.
  lucidrains: denoising_diffusion_pytorch.Unet(dim=32, dim_mults=(1, 2, 2), channels=1),
              its own defaults otherwise (linear attention at the upper levels, full attention
              at the lowest).
Both train with the same loop, the one diffusers' train_unconditional example runs: random
images (real data loading is not what is measured), t ~ Uniform{0..T-1} with T = 1000,
x_t = DDPMScheduler.add_noise(x_0, eps, t) (linear betas 1e-4..0.02), eps loss (MSE), Adam
(lr 2e-4, torch's defaults otherwise), gradient clipping at global norm 1 and an EMA of the
parameters (decay 0.9999), as ddpm's train step does. Mode "compile" wraps the U-Net in
torch.compile (default options); loss, optimizer and EMA stay eager, as users run it.

Sampling: DDIM (DDIMScheduler, eta 0) with `--sample-steps` steps at `--batch`; one step is
one U-Net forward plus the scheduler step, under torch.no_grad.

FLOPs: torch.utils.flop_counter.FlopCounterMode over one eager forward (and one forward +
backward) at batch 2, per image. It counts matrix multiplies, convolutions and attention (2 per
multiply-add; the CPU attention kernel's formula is added here, torch has only the CUDA ones),
not element-wise work (norms, activations). Achieved GFLOP/s uses the
convention train FLOPs = 3 x forward FLOPs (backward ~ 2 x forward).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import types

import torch
import torch.nn.functional as F

from bench_util import log, peak_rss_mb, timed  # noqa: E402

T = 1000


@contextlib.contextmanager
def torchvision_stub():
  """While importing denoising_diffusion_pytorch: an empty `torchvision` (with `transforms`
  and `utils`) in sys.modules if the real one is missing. Yields whether it stubbed.

  That package imports `from torchvision import transforms as T, utils` at the top of the
  module that defines Unet, but only its Dataset and Trainer use them, and there is no CPU
  build of torchvision here (setup_peers.sh installs the package with --no-deps). The stub is
  taken out of sys.modules right after the import, so nothing else (diffusers' and torch's
  "is torchvision available" checks) ever sees it; anything that did touch it would fail with
  an AttributeError, not compute wrongly.
  """
  if importlib.util.find_spec("torchvision") is not None:
    yield False
    return
  names = ("torchvision", "torchvision.transforms", "torchvision.utils")
  tv = types.ModuleType("torchvision")
  sys.modules["torchvision"] = tv
  for sub in ("transforms", "utils"):
    mod = types.ModuleType(f"torchvision.{sub}")
    setattr(tv, sub, mod)
    sys.modules[f"torchvision.{sub}"] = mod
  try:
    yield True
  finally:
    for name in names:
      sys.modules.pop(name, None)


def build_unet(impl: str, image_size: int, channels: int):
  """(module, forward(x, t) -> eps prediction, info) for a peer's U-Net."""
  info = {}
  if impl == "diffusers":
    import diffusers
    model = diffusers.UNet2DModel(
        sample_size=image_size, in_channels=channels, out_channels=channels,
        block_out_channels=(32, 64, 64), layers_per_block=2,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        attention_head_dim=None, dropout=0.0)
    info["version"] = diffusers.__version__

    def forward(m, x, t):
      return m(x, t, return_dict=False)[0]
  elif impl == "lucidrains":
    with torchvision_stub() as stubbed:
      # The Unet's own module, not the package's __init__ (which imports every variant).
      from denoising_diffusion_pytorch.denoising_diffusion_pytorch import Unet
      from denoising_diffusion_pytorch.version import __version__
    info["torchvision_stub"] = stubbed
    model = Unet(dim=32, dim_mults=(1, 2, 2), channels=channels)
    info["version"] = __version__

    def forward(m, x, t):
      return m(x, t)
  else:
    raise ValueError(f"--impl={impl!r}; allowed: diffusers, lucidrains.")
  return model, forward, info


def cpu_attention_flops() -> dict:
  """FlopCounterMode formulas for the CPU kernels of scaled_dot_product_attention, which torch
  does not count (it counts the CUDA flash/efficient/cudnn ones): without them diffusers'
  attention matmuls (about 1 % of its forward) would be missing."""
  from torch.utils import flop_counter
  aten = torch.ops.aten

  def fwd(query, key, value, *args, out_shape=None, **kwargs):
    return flop_counter.sdpa_flop_count(query, key, value)

  def bwd(grad_out, query, key, value, *args, out_shape=None, **kwargs):
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)

  return {aten._scaled_dot_product_flash_attention_for_cpu: fwd,
          aten._scaled_dot_product_flash_attention_for_cpu_backward: bwd}


def count_flops(model, forward, image_size: int, channels: int, batch: int = 2) -> tuple[float, float]:
  """(forward FLOPs per image, forward + backward FLOPs per image), counted eagerly."""
  from torch.utils.flop_counter import FlopCounterMode
  x = torch.randn(batch, channels, image_size, image_size)
  t = torch.randint(0, T, (batch,))
  mapping = cpu_attention_flops()
  model.eval()
  with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as fc:
    forward(model, x, t)
  fwd = fc.get_total_flops() / batch
  model.train()
  with FlopCounterMode(display=False, custom_mapping=mapping) as fc:
    forward(model, x, t).square().mean().backward()
  model.zero_grad(set_to_none=True)
  return fwd, fc.get_total_flops() / batch


def run_train(args, model, forward, run_model) -> dict:
  from diffusers import DDPMScheduler
  sched = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear")
  params = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.Adam(params, lr=2e-4)
  ema = [p.detach().clone() for p in params]
  gen = torch.Generator().manual_seed(0)
  shape = (args.batch, args.channels, args.image_size, args.image_size)
  pool = [torch.rand(shape, generator=gen) * 2 - 1 for _ in range(4)]  # "images" in [-1, 1]
  model.train()

  def step(i):
    x0 = pool[i % len(pool)]
    noise = torch.randn_like(x0)
    t = torch.randint(0, T, (x0.shape[0],))
    xt = sched.add_noise(x0, noise, t)
    loss = F.mse_loss(forward(run_model, xt, t), noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    with torch.no_grad():
      torch._foreach_lerp_(ema, params, 1.0 - 0.9999)
    return loss

  first = timed(lambda: step(0))  # torch.compile compiles here.
  log(f"first step {first:.2f} s")
  for i in range(args.warmup):
    step(1 + i)
  times = [timed(lambda i=i: step(1 + args.warmup + i)) for i in range(args.steps)]
  med = statistics.median(times)
  log(f"train: median step {med:.4f} s over {len(times)} steps, {args.batch / med:.1f} img/s")
  return {"first_step_s": first, "step_s_median": med, "step_s_mean": statistics.fmean(times),
          "step_s": times, "images_per_s": args.batch / med}


def run_sample(args, model, forward, run_model) -> dict:
  from diffusers import DDIMScheduler
  model.eval()
  out = {}
  shape = (args.batch, args.channels, args.image_size, args.image_size)
  for n in args.sample_steps:
    runs = []
    for rep in range(2):  # The first run includes torch.compile's compilation.
      sched = DDIMScheduler(num_train_timesteps=T, beta_schedule="linear", clip_sample=True)
      sched.set_timesteps(n)
      x = torch.randn(shape, generator=torch.Generator().manual_seed(rep))
      step_times = []
      with torch.no_grad():
        for t in sched.timesteps:
          t0 = time.perf_counter()
          eps = forward(run_model, x, torch.full((shape[0],), int(t)))
          x = sched.step(eps, t, x, eta=0.0).prev_sample
          step_times.append(time.perf_counter() - t0)
      runs.append(step_times)
    first, steady = runs
    out[str(n)] = {"first_run_s": sum(first), "first_step_s": first[0], "run_s": sum(steady),
                   "s_per_step": sum(steady) / n, "step_s_median": statistics.median(steady)}
    log(f"sample {n} steps: {sum(steady):.2f} s ({sum(steady) / n:.4f} s/step), "
        f"first run {sum(first):.2f} s")
  largest = str(max(args.sample_steps))
  return {"sample": out, "sample_s_per_step": out[largest]["s_per_step"],
          "sample_first_step_s": out[str(args.sample_steps[0])]["first_step_s"]}


def run_matmul(args) -> dict:
  """fp32 matmul GFLOP/s at the benchmark's thread count (a reference for torch's BLAS)."""
  n = args.matmul_size
  a, b = torch.randn(n, n), torch.randn(n, n)
  for _ in range(2):
    a @ b
  times = [timed(lambda: a @ b) for _ in range(args.steps)]
  med = statistics.median(times)
  return {"matmul_size": n, "step_s_median": med, "gflops": 2 * n ** 3 / med / 1e9}


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--impl", choices=("diffusers", "lucidrains", "torch"), required=True)
  p.add_argument("--mode", choices=("eager", "compile"), default="eager")
  p.add_argument("--task", choices=("train", "sample", "flops", "matmul"), default="train")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--image-size", type=int, default=32)
  p.add_argument("--channels", type=int, default=1)
  p.add_argument("--warmup", type=int, default=3, help="untimed steps after the first")
  p.add_argument("--steps", type=int, default=15, help="timed steps (median)")
  p.add_argument("--sample-steps", type=lambda s: [int(v) for v in s.split(",")],
                 default=[20, 50], help="comma-separated DDIM step counts")
  p.add_argument("--matmul-size", type=int, default=2048)
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--warm-cache", action="store_true",
                 help="compile mode: keep torch inductor's on-disk cache (default: a fresh one)")
  args = p.parse_args(argv)

  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  if args.mode == "compile" and not args.warm_cache:
    # A fresh, empty inductor cache: otherwise a second run loads the first run's kernels and
    # its "first step" no longer includes the compilation.
    cache = tempfile.mkdtemp(prefix="inductor_cache_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
  result = {"impl": args.impl, "mode": args.mode, "task": args.task, "batch": args.batch,
            "image_size": args.image_size, "channels": args.channels, "threads": args.threads,
            "torch": torch.__version__, "intra_op_threads": torch.get_num_threads()}
  if args.task == "matmul":
    result.update(run_matmul(args))
  else:
    model, forward, info = build_unet(args.impl, args.image_size, args.channels)
    result.update(info)
    result["params"] = sum(p.numel() for p in model.parameters())
    fwd, train = count_flops(model, forward, args.image_size, args.channels)
    result.update(fwd_flops_per_image=fwd, train_flops_per_image_counted=train,
                  flops_source="torch FlopCounterMode")
    log(f"{args.impl}: {result['params']:,} parameters, {fwd / 1e9:.3f} GFLOP forward per image, "
        f"{train / 1e9:.3f} GFLOP forward + backward")
    run_model = torch.compile(model) if args.mode == "compile" else model
    if args.task == "train":
      result.update(run_train(args, model, forward, run_model))
      result["achieved_gflops"] = 3 * fwd * result["images_per_s"] / 1e9
    elif args.task == "sample":
      result.update(run_sample(args, model, forward, run_model))
  result["peak_rss_mb"], result["peak_rss_children_mb"] = peak_rss_mb()
  print(json.dumps(result), flush=True)
  return result


if __name__ == "__main__":
  main()
