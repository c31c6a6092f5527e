r"""Where along t a checkpoint's denoiser is wrong: the per-t error on real test images.

For each t of a grid, N test images x0 (the data range [-1, 1]) get the same noise draws eps,
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (Ho et al. 2020, eq. 4), and the model's output is
converted to (x0_hat, eps_hat) (`ddpm.diffusion.parameterization`, no clipping). Written per t:

  x0_mse   = E ||x0_hat - x0||^2 / D     (what a sampler's denoiser gets wrong, pixel scale)
  eps_mse  = E ||eps_hat - eps||^2 / D   = x0_mse * SNR(t)   (L_simple's per-t term)
  x0_mse_over_prior = x0_mse / E ||E[x0] - x0||^2 / D: 1 is the error of predicting the
             data mean at every pixel (what an untrained denoiser gives at high noise)

For several runs (`--run=NAME:WORKDIR`, each scored with the same images and noise) it writes
a JSON of every number and a plot of x0_mse vs. t, so two recipes can be compared at each
noise level. The config and overrides are those the runs trained with (the model must match).

  python experiments/quality/error_vs_t.py --config=configs/mnist.py \
      --run=constant:/tmp/ddpm_quality/onednn_45min_seed0 --run=cosine:/tmp/ddpm_quality/X_seed0 \
      --out=experiments/quality/error_vs_t
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from ddpm.data import image_arrays, input_pipeline
from ddpm.diffusion import forward, parameterization, schedules
from ddpm.jobs import restore
from ddpm.models import build
from ddpm.pipelines import denoiser

config_flags.DEFINE_config_file("config", "configs/mnist.py")
flags.DEFINE_multi_string("run", [], "NAME:WORKDIR of a trained run (repeatable)")
flags.DEFINE_integer("num_images", 1000, "test images per t")
flags.DEFINE_integer("batch_size", 250, "images per call")
flags.DEFINE_string("timesteps", "0,5,10,25,50,100,150,200,300,400,500,600,700,800,900,999",
                    "comma-separated t")
flags.DEFINE_string("out", "", "path prefix of the .json and .png (empty: print only)")
FLAGS = flags.FLAGS


def per_t_errors(apply_fn, schedule, prediction_type, x0, ts, key, batch_size):
  """{t: (x0_mse, eps_mse)} over the images x0 [N,H,W,C], noise from fold_in(key, t)."""
  @jax.jit
  def batch_errors(x0b, t, k):
    eps = jax.random.normal(k, x0b.shape, x0b.dtype)
    tb = jnp.full((x0b.shape[0],), t, jnp.int32)
    xt = forward.q_sample(schedule, x0b, tb, eps)
    x0_hat, eps_hat = parameterization.model_output_to_x0_eps(
        schedule, prediction_type, apply_fn(xt, tb), xt, tb)
    return (jnp.sum(jnp.mean((x0_hat - x0b) ** 2, axis=(1, 2, 3))),
            jnp.sum(jnp.mean((eps_hat - eps) ** 2, axis=(1, 2, 3))))
  out = {}
  for t in ts:
    sx, se = 0.0, 0.0
    for i in range(0, len(x0), batch_size):
      a, b = batch_errors(x0[i:i + batch_size], t, jax.random.fold_in(jax.random.fold_in(key, t), i))
      sx, se = sx + float(a), se + float(b)
    out[int(t)] = (sx / len(x0), se / len(x0))
  return out


def main(_):
  config = FLAGS.config
  if not FLAGS.run:
    raise app.UsageError("give at least one --run=NAME:WORKDIR")
  ts = [int(t) for t in FLAGS.timesteps.split(",")]
  bad = [t for t in ts if not 0 <= t < config.diffusion.num_timesteps]
  if bad:
    raise app.UsageError(f"--timesteps {bad} outside 0..{config.diffusion.num_timesteps - 1}")
  schedule = schedules.schedule_from_config(config.diffusion)
  images, _ = input_pipeline.load_split_uint8(config, config.data.eval_split, FLAGS.num_images)
  x0 = np.asarray(image_arrays.uint8_to_model_range(image_arrays.check_images(images)))
  prior = float(np.mean((x0 - x0.mean(axis=0, keepdims=True)) ** 2))
  model = build.create_model(config)
  results = {"timesteps": ts, "num_images": len(x0), "prior_x0_mse": prior,
             "snr": [float(forward.snr(schedule, jnp.asarray([t]))[0]) for t in ts], "runs": {}}
  for spec in FLAGS.run:
    name, _, workdir = spec.partition(":")
    _, params, step = restore.restore_params(config, workdir)
    errs = per_t_errors(denoiser.make_denoise_fn(model, params), schedule,
                        config.diffusion.prediction_type, x0, ts, jax.random.PRNGKey(0),
                        FLAGS.batch_size)
    results["runs"][name] = {"workdir": workdir, "step": step, "use_ema": config.sampling.use_ema,
                             "x0_mse": [errs[t][0] for t in ts], "eps_mse": [errs[t][1] for t in ts],
                             "x0_mse_over_prior": [errs[t][0] / prior for t in ts]}
    for t in ts:
      logging.info("%s step %d t=%4d: x0_mse %.5f (%.3f of the prior's), eps_mse %.5f", name, step,
                   t, errs[t][0], errs[t][0] / prior, errs[t][1])
  print(json.dumps(results, indent=1))
  if FLAGS.out:
    os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
    with open(FLAGS.out + ".json", "w") as f:
      json.dump(results, f, indent=1)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results["runs"].items():
      ax.plot(ts, r["x0_mse"], marker="o", ms=3, label=f"{name} (step {r['step']})")
    ax.set_yscale("log")
    ax.set_xlabel("t (of 1000)")
    ax.set_ylabel("x0 MSE per pixel, data range [-1, 1]")
    ax.set_title(f"denoiser error on {len(x0)} test images")
    ax.legend()
    fig.tight_layout()
    fig.savefig(FLAGS.out + ".png", dpi=120)


if __name__ == "__main__":
  app.run(main)
