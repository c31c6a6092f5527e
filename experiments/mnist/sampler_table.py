r"""Sampler quality vs. cost on the trained MNIST model: a markdown table and a plot.

Quality comes from the eval results that experiments/mnist/evaluate_run.sh collects in
WORKDIR/eval/<step>.json (FID/IS/precision/recall of 1000 images per sampler). Cost is measured
here, on an otherwise idle machine: each sampler drawing 200 images (one batch) from the
same checkpoint, timed after compilation, and the compile time itself. A sampler is one
`lax.scan`, so its cost is (steps x network evaluation) and the compile time does not grow
with the number of steps.

  TFDS_DATA_DIR=../shared/data/tensorflow_datasets \
    python experiments/mnist/sampler_table.py --workdir=/path/to/mnist_run --out=experiments/mnist
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import jax_utils  # noqa: E402

from configs import mnist  # noqa: E402
from ddpm.diffusion import schedules  # noqa: E402
from ddpm.evaluation import features, metrics, sample_quality as quality  # noqa: E402
from ddpm.models import build  # noqa: E402
from ddpm.pipelines import generation  # noqa: E402
from ddpm.runtime import replicas  # noqa: E402
from ddpm.jobs.sample import SampleJob  # noqa: E402

# (method, steps, spacing); NFE = steps, except Heun: 2 steps - 1.
SAMPLERS = [("ddim", 10, "uniform"), ("ddim", 20, "uniform"), ("ddim", 50, "uniform"),
            ("ddim", 100, "uniform"), ("ddpm", 1000, "uniform"),
            ("ddim", 10, "quadratic"), ("ddim", 20, "quadratic"),
            ("dpm_solver_pp_2m", 10, "quadratic"), ("dpm_solver_pp_2m", 20, "quadratic"),
            ("heun", 10, "quadratic"), ("heun", 20, "quadratic")]
LABELS = {"ddim": "DDIM", "ddpm": "DDPM", "dpm_solver_pp_2m": "DPM-Solver++(2M)", "heun": "Heun"}


def nfe(method, steps):
  return 2 * steps - 1 if method == "heun" else steps


def time_sampler(job, method, steps, spacing, batch, repeats=1):
  c = mnist.get_config()
  c.sampling.autoguidance_weight = 0.0  # This table times and scores each sampler alone.
  c.sampling.method, c.sampling.num_steps, c.sampling.spacing = method, steps, spacing
  per_device = -(-batch // jax.local_device_count())
  fn = generation.make_generate_fn(build.create_model(c), schedules.schedule_from_config(c.diffusion),
                                   c.sampling, c.diffusion, per_device, build.image_shape(c))
  params = jax_utils.replicate(job.params, axis_name=replicas.AXIS)
  keys = jax.random.split(jax.random.PRNGKey(0), jax.local_device_count() * per_device)
  keys = keys.reshape((jax.local_device_count(), per_device, -1))
  labels = np.zeros(keys.shape[:2], np.int32)  # Unused by this unconditional model.
  t0 = time.perf_counter()
  compiled = fn.lower(params, keys, labels).compile()
  compile_s = time.perf_counter() - t0
  runs = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(params, keys, labels))
    runs.append(time.perf_counter() - t0)
  return compile_s, float(np.median(runs))


def bootstrap_fid_std(npz, ref, num=50, seed=0):
  """Std of FID over `num` resamples (with replacement) of the samples: its sampling noise."""
  with np.load(npz) as f:
    feats = features.classifier_extractor("mnist")(f["images"]).features
  rs = metrics.GaussianStats(ref["mu"], ref["sigma"], int(ref["num"]))
  rng = np.random.default_rng(seed)
  fids = [metrics.frechet_distance(metrics.gaussian_stats(feats[rng.integers(0, len(feats), len(feats))]), rs)
          for _ in range(num)]
  return float(np.std(fids, ddof=1))


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", required=True)
  p.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
  p.add_argument("--batch", type=int, default=200)
  p.add_argument("--num_images", type=int, default=1000)
  args = p.parse_args()
  c = mnist.get_config()
  c.sampling.autoguidance_weight = 0.0  # This table times and scores each sampler alone.
  job = SampleJob.setup(c, args.workdir)
  with open(os.path.join(args.workdir, "eval", f"{job.step}.json")) as f:
    ev = json.load(f)
  ev_ref = quality.reference_statistics(c, features.classifier_extractor("mnist"), "train",
                                        os.path.join(args.workdir, "eval", "reference"))
  rows = []
  for method, steps, spacing in SAMPLERS:
    sc = mnist.get_config().sampling
    sc.method, sc.num_steps, sc.spacing, sc.autoguidance_weight = method, steps, spacing, 0.0
    name = f"{generation.sampler_name(sc)}_seed0_step{job.step}"
    q = ev["samples"].get(name)
    if q is None:
      print(f"no eval entry {name}; run experiments/mnist/evaluate_run.sh first", file=sys.stderr)
      continue
    fid_std = bootstrap_fid_std(q["npz"], ev_ref)
    compile_s, batch_s = time_sampler(job, method, steps, spacing, args.batch)
    per_image_s = batch_s / args.batch
    rows.append(dict(sampler=f"{LABELS[method]} {steps}", method=method, spacing=spacing,
                     steps=steps, nfe=nfe(method, steps), fid=q["fid"], fid_bootstrap_std=fid_std,
                     inception_score=q["inception_score"], precision=q["precision"],
                     recall=q["recall"], compile_s=compile_s, batch_s=batch_s,
                     seconds_per_1000_images=1000 * per_image_s,
                     ms_per_image_step=1000 * per_image_s / steps))
    print(json.dumps(rows[-1]), flush=True)
  floor = ev["real_floor"]
  with open(os.path.join(args.out, "sampler_table.json"), "w") as f:
    json.dump(dict(rows=rows, real_floor=floor, batch=args.batch, step=job.step,
                   device=str(jax.devices()[0]), jax=jax.__version__), f, indent=1)
  lines = ["| sampler | spacing | NFE | FID | IS | precision | recall | s / 1000 images | compile s |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['sampler']} | {r['spacing']} | {r['nfe']} | {r['fid']:.1f} ± {r['fid_bootstrap_std']:.1f} | {r['inception_score']:.2f} | "
                 f"{r['precision']:.3f} | {r['recall']:.3f} | {r['seconds_per_1000_images']:.0f} | "
                 f"{r['compile_s']:.1f} |")
  lines.append(f"| real test images (floor) | | | {floor['fid']:.1f} | {floor['inception_score']:.2f} | "
               f"{floor['precision']:.3f} | {floor['recall']:.3f} | - | - |")
  table = "\n".join(lines)
  with open(os.path.join(args.out, "sampler_table.md"), "w") as f:
    f.write(table + "\n")
  print(table)

  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  groups = [("ddim", "uniform", "o-", "DDIM eta 0, uniform"),
            ("ddim", "quadratic", "o--", "DDIM eta 0, quadratic"),
            ("dpm_solver_pp_2m", "quadratic", "^-", "DPM-Solver++(2M), quadratic"),
            ("heun", "quadratic", "v-", "Heun (EDM), quadratic"),
            ("ddpm", "uniform", "s", "DDPM ancestral")]
  for method, spacing, marker, label in groups:
    rs = [r for r in rows if r["method"] == method and r["spacing"] == spacing]
    if not rs:
      continue
    ax.plot([r["seconds_per_1000_images"] for r in rs], [r["fid"] for r in rs], marker, label=label)
    for r in rs:
      ax.annotate(str(r["nfe"]), (r["seconds_per_1000_images"], r["fid"]),
                  textcoords="offset points", xytext=(4, 4), fontsize=7)
  ax.axhline(floor["fid"], color="gray", ls="--", label="real test images")
  ax.set_xscale("log")
  ax.set_xlabel("seconds per 1000 images (2-core CPU, batch 200)")
  ax.set_ylabel("FID (MNIST classifier features)")
  ax.set_title(f"MNIST step {job.step}: FID vs. cost (1000 images; labels: NFE)", fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(args.out, "sampler_fid.png"), dpi=120)
  print("wrote", os.path.join(args.out, "sampler_fid.png"))


if __name__ == "__main__":
  main()
