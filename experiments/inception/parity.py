r"""Parity of `ddpm.models.inception.InceptionV3` with pytorch-fid's own FID Inception, on random weights.

pytorch-fid's weights can't be downloaded here, so both networks get the same random weights
and BatchNorm statistics (fixed seed). Two steps, two Pythons (see README.md):

  # 1. torch venv: pytorch-fid's InceptionV3([3], resize_input=True, normalize_input=True), random
  #    state_dict -> weights.npz (through convert_pt_inception.py, both .pth formats and readers),
  #    reference pool3 features and fc logits (and bare resizes) -> reference.npz
  /work/venvs/torch/bin/python experiments/inception/parity.py torch --out=/tmp/inception_parity
  # 2. system Python: the Flax module on the same inputs, compared.
  python3 experiments/inception/parity.py flax --out=/tmp/inception_parity

Inputs are uint8 images, fed as pytorch-fid's `fid_score` does (u8 / 255 in [0, 1], its
`normalize_input` maps to [-1, 1]) and as `ddpm.evaluation.features.FeatureExtractor` does (u8 / 127.5 - 1):
28x28x1 (repeated to 3 channels for torch), 32x32x3 (upsampled), 299x299x3 (no resize) and
320x480x3 (downsampled, not square).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SEED = 0
CASES = {"gray28": (4, 28, 28, 1), "rgb32": (4, 32, 32, 3), "rgb299": (2, 299, 299, 3),
         "rgb320x480": (2, 320, 480, 3)}
RESIZE_SHAPES = [(28, 28), (32, 32), (64, 17), (320, 480), (1000, 1000)]


def make_images(shape, rng) -> np.ndarray:
  """uint8 images: half noise, half smooth gradients with noise (resizing sees both)."""
  n, h, w, c = shape
  noise = rng.integers(0, 256, shape)
  yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
  smooth = 255 * (0.5 + 0.4 * np.sin(6 * xx + 4 * yy))[None, :, :, None]
  smooth = smooth + rng.normal(0, 10, shape)
  x = np.where(np.arange(n)[:, None, None, None] % 2 == 0, noise, smooth)
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def run_torch(out: str) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  # This torchvision wheel is a CUDA build next to a CPU torch: its C ops don't load, and
  # importing it registers fake kernels for two of them. Declaring their schemas is enough for
  # the pure-Python models (Inception uses no torchvision op).
  lib = torch.library.Library("torchvision", "DEF")  # noqa: F841  (kept alive to the end)
  for op in ("nms", "qnms"):
    lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
  import pytorch_fid  # pylint: disable=g-import-not-at-top
  from pytorch_fid import inception as pfi  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, HERE)
  import convert_pt_inception as conv  # pylint: disable=g-import-not-at-top

  built = {}

  def fid_inception_v3_random():
    """pytorch-fid's `fid_inception_v3()` without its download (same blocks, random weights)."""
    # pylint: disable-next=protected-access
    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    built["net"] = net
    return net

  pfi.fid_inception_v3 = fid_inception_v3_random
  model = pfi.InceptionV3([3], resize_input=True, normalize_input=True).eval()
  net = built["net"]

  # Random weights and BatchNorm statistics; He-scaled convs keep activations O(1) over 94 layers.
  g = torch.Generator().manual_seed(SEED)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
        fan_in = m.weight[0].numel()
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
        if m.bias is not None:
          m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
      elif isinstance(m, torch.nn.BatchNorm2d):
        c = m.num_features
        m.weight.copy_(0.5 + torch.rand(c, generator=g))
        m.bias.copy_(torch.randn(c, generator=g) * 0.2)
        m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
        m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))

  # Weights through the converter: both torch file formats, both readers, must agree exactly.
  os.makedirs(out, exist_ok=True)
  state = net.state_dict()
  ref = {k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}
  for fmt, zip_fmt in (("zip", True), ("legacy", False)):
    pth = os.path.join(out, f"random_{fmt}.pth")
    torch.save(state, pth, _use_new_zipfile_serialization=zip_fmt)
    for reader in ("torch", "pickle"):
      got = conv.read_pth(pth, reader)
      assert got.keys() == ref.keys(), (fmt, reader)
      assert all(np.array_equal(got[k], ref[k]) for k in ref), (fmt, reader)
    print(f"{fmt} .pth: torch and torch-free readers give the same {len(ref)} arrays exactly")
  conv.save_npz(conv.read_pth(os.path.join(out, "random_legacy.pth"), "pickle"),
                os.path.join(out, "weights.npz"))

  rng = np.random.default_rng(SEED)
  result = {}
  with torch.no_grad():
    for name, shape in CASES.items():
      u8 = make_images(shape, rng)
      x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255.0
      if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
      pool3 = model(x)[0].flatten(1)
      result[f"{name}/images"] = u8
      result[f"{name}/pool3"] = pool3.numpy()
      result[f"{name}/logits"] = net.fc(pool3).numpy()
    for h, w in RESIZE_SHAPES:
      x = rng.uniform(-1, 1, (2, 3, h, w)).astype(np.float32)
      y = F.interpolate(torch.from_numpy(x), size=(299, 299), mode="bilinear", align_corners=False)
      result[f"resize{h}x{w}/x"] = x.transpose(0, 2, 3, 1)
      result[f"resize{h}x{w}/y"] = y.numpy().transpose(0, 2, 3, 1)
  np.savez(os.path.join(out, "reference.npz"), **result)
  print(f"torch {torch.__version__}, pytorch-fid {pytorch_fid.__version__}: wrote "
        f"{out}/weights.npz and {out}/reference.npz")


def run_flax(out: str) -> float:
  sys.path.insert(0, REPO)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from ddpm.evaluation import features  # pylint: disable=g-import-not-at-top
  from ddpm.models import inception  # pylint: disable=g-import-not-at-top

  ref = np.load(os.path.join(out, "reference.npz"))
  extractor = features.inception_extractor(os.path.join(out, "weights.npz"), batch_size=4)
  apply = functools.partial(jax.jit(extractor.apply), extractor.variables)
  worst = 0.0
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}\n"
        f"{'case':<18}{'output':<8}{'max |ref|':>11}{'max abs err':>13}{'max rel err':>13}")

  def report(case, what, got, want):
    nonlocal worst
    err = float(np.max(np.abs(np.asarray(got, np.float64) - want)))
    rel = err / float(np.max(np.abs(want)))
    worst = max(worst, rel)
    print(f"{case:<18}{what:<8}{np.max(np.abs(want)):>11.4g}{err:>13.3g}{rel:>13.3g}")

  for name in CASES:
    x = jnp.asarray(ref[f"{name}/images"], jnp.float32) / 127.5 - 1.0  # As FeatureExtractor.
    pool3, logits = apply(x)
    report(name, "pool3", pool3, ref[f"{name}/pool3"])
    report(name, "logits", logits, ref[f"{name}/logits"])
  for h, w in RESIZE_SHAPES:
    y = inception.resize_bilinear(jnp.asarray(ref[f"resize{h}x{w}/x"]), (299, 299))
    report(f"resize {h}x{w}", "image", y, ref[f"resize{h}x{w}/y"])
  print(f"worst relative error (max abs err / max |ref|): {worst:.3g}")
  return worst


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  p.add_argument("side", choices=("torch", "flax"))
  p.add_argument("--out", default="/tmp/inception_parity")
  p.add_argument("--tol", type=float, default=1e-4, help="flax: fail above this relative error")
  args = p.parse_args()
  if args.side == "torch":
    run_torch(args.out)
  elif run_flax(args.out) > args.tol:
    sys.exit(f"parity FAILED: relative error above {args.tol}")


if __name__ == "__main__":
  main()
