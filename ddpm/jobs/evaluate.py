r"""`--mode=eval`: how good a checkpoint is, as numbers a command reproduces.

For the checkpoint chosen by config.sampling.checkpoint_step (-1: the latest) this measures

  * samples: FID, Inception Score and k-NN precision/recall of config.eval.num_samples images
    drawn with config.sampling (or read from config.eval.samples_npz), against the statistics
    of the reference split (cached in workdir/eval/reference/), and the same numbers for real
    images of config.eval.real_split: the floor the model is measured against
    (`ddpm.evaluation.sample_quality`);
  * bpd: the variational bound in bits/dim on the test split (`ddpm.evaluation.denoiser_quality`);
  * denoise: MSE/PSNR of test images with added Gaussian noise, denoised in one step and by
    the reverse process (`ddpm.evaluation.denoiser_quality`), next to the noisy baseline, and
    a figure.

Results are merged into workdir/eval/<step>.json (one entry per sampler under "samples", so
several samplers of one checkpoint collect in one file); figures go to workdir/eval/.
Every piece is a function of `ddpm.evaluation`, usable from Python as well.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
from absl import logging

from ddpm.data import image_arrays, image_files, image_folder, image_shards, input_pipeline
from ddpm.diffusion import schedules
from ddpm.evaluation import denoiser_quality, features, sample_quality as quality
from ddpm.jobs import config_validation, restore
from ddpm.models import build
from ddpm.pipelines import denoiser, generation
from ddpm.runtime import storage
from ddpm.visualization import figures, grids


def _merge_json(path: str, update: dict) -> dict:
  data = {}
  if os.path.isfile(path):
    with open(path) as f:
      data = json.load(f)
  for k, v in update.items():
    if isinstance(v, dict) and isinstance(data.get(k), dict):
      data[k] = data[k] | v
    else:
      data[k] = v
  storage.write_atomically(path, lambda f: f.write(
      json.dumps(data, indent=1, sort_keys=True).encode()))
  return data


@dataclasses.dataclass
class EvalJob:
  config: object
  workdir: str
  params: object
  step: int
  metrics: tuple[str, ...]
  extractor: features.FeatureExtractor | None
  samples: np.ndarray | None = None  # config.eval.samples_npz's images, read (and checked) once.
  guide_params: object = None  # Autoguidance's guide (sampling.guide_step...), or None.

  @staticmethod
  def validate(config) -> None:
    """The config-only checks of `setup`: one-line ValueError for the first bad value."""
    config_validation.validate_config(config)

  @classmethod
  def setup(cls, config, workdir: str) -> "EvalJob":
    """Checks inputs, restores the checkpoint, loads the feature network: one-line errors."""
    cls.validate(config)
    ev = config.eval
    wanted = tuple(m.strip() for m in ev.metrics.split(",") if m.strip())
    extractor = features.extractor_for(config) if "samples" in wanted else None
    if config.data.dataset == input_pipeline.IMAGE_FOLDER:  # Bad folder or split: fail now.
      folder = input_pipeline.get_builder(config.data, config.model.num_classes)
      for split in (ev.reference_split, ev.real_split, config.data.eval_split):
        folder.indices(split)
    samples = None
    if "samples" in wanted and ev.samples_npz:  # Read here: a bad file fails before any work.
      if os.path.isdir(ev.samples_npz):  # A folder of generated images (any sampler's).
        samples = image_folder.read_folder_uint8(ev.samples_npz, build.image_shape(config), None,
                                                 config.data.resize_method,
                                                 "config.eval.samples_npz")
      else:
        samples = image_files.read_npz_images(ev.samples_npz, build.image_shape(config),
                                              config_key="config.eval.samples_npz")
    workdir, params, step = restore.restore_params(config, workdir)
    guide = (restore.restore_guide_params(config, workdir, step)
             if "samples" in wanted and not ev.samples_npz else None)
    return cls(config, workdir, params, step, wanted, extractor, samples, guide)

  def run(self) -> dict:
    c, ev = self.config, self.config.eval
    out_dir = os.path.join(self.workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, f"{self.step}.json")
    is_main = jax.process_index() == 0
    model = build.create_model(c)
    schedule = schedules.schedule_from_config(c.diffusion)
    key = jax.random.PRNGKey(ev.seed)
    result = {"step": self.step, "dataset": c.data.dataset, "use_ema": bool(c.sampling.use_ema)}
    shard_dir = None

    if "samples" in self.metrics:
      ref = quality.reference_statistics(c, self.extractor, ev.reference_split,
                                         os.path.join(out_dir, "reference"), ev.num_reference)
      real, _ = input_pipeline.load_split_uint8(c, ev.real_split, ev.num_samples)
      floor = quality.sample_quality(self.extractor, real, ref, k=ev.pr_k, is_splits=ev.is_splits)
      floor["split"] = ev.real_split
      logging.info("Real %s images vs %s: FID %.3f, IS %.3f, precision %.3f, recall %.3f",
                   ev.real_split, ev.reference_split, floor["fid"], floor["inception_score"],
                   floor["precision"], floor["recall"])
      if ev.samples_npz:
        images = self.samples
        name, info = os.path.splitext(os.path.basename(ev.samples_npz))[0], {"npz": ev.samples_npz}
      else:
        name = f"{generation.sampler_name(c.sampling)}_seed{c.sampling.seed}"
        shard_dir = os.path.join(out_dir, "shards", f"{self.step}_{name}_n{ev.num_samples}")
        images, info = self._draw(ev.num_samples, shard_dir)
        try:
          grids.save_grid(os.path.join(out_dir, f"{self.step}_{name}.png"), images[:64])
        except OSError as e:  # The numbers are the result; a grid is a warning.
          logging.warning("Could not write the sample grid of %s (%s).", name, e.strerror or e)
      q = quality.sample_quality(self.extractor, images, ref, k=ev.pr_k,
                                 is_splits=ev.is_splits) | info
      logging.info("Samples %s: FID %.3f, IS %.3f, precision %.3f, recall %.3f", name, q["fid"],
                   q["inception_score"], q["precision"], q["recall"])
      result |= {"reference": {"split": ev.reference_split, "num_images": int(ref["num"])},
                 "real_floor": floor, "samples": {name: q}}

    if "bpd" in self.metrics or "denoise" in self.metrics:  # One read serves both.
      test_all, _ = input_pipeline.load_split_uint8(
          c, c.data.eval_split, max(ev.bpd_num_images, ev.denoise_num_images))

    if "bpd" in self.metrics:
      test = test_all[:ev.bpd_num_images]
      result["bpd"] = denoiser_quality.bits_per_dim(
          model, self.params, schedule, test, jax.random.fold_in(key, 1),
          num_strata=ev.bpd_num_strata, prediction_type=c.diffusion.prediction_type,
          variance=ev.bpd_variance, batch_size=ev.batch_size)
      result["bpd"]["split"] = c.data.eval_split
      logging.info("Bound on %d %s images: %.4f +- %.4f bits/dim (prior term %.2e)",
                   result["bpd"]["num_images"], c.data.eval_split, result["bpd"]["bits_per_dim"],
                   result["bpd"]["standard_error"] or 0.0, result["bpd"]["prior_bits_per_dim"])

    if "denoise" in self.metrics:
      test = test_all[:ev.denoise_num_images]
      res, pics = denoiser_quality.denoising_eval(
          model, self.params, schedule, test, jax.random.fold_in(key, 2),
          sigmas=tuple(ev.denoise_sigmas), ddim_steps=ev.denoise_ddim_steps,
          prediction_type=c.diffusion.prediction_type, clip_x0=c.sampling.clip_x0,
          batch_size=ev.batch_size)
      result["denoise"] = res
      if is_main:
        try:  # The numbers go to the JSON below; figures that cannot be written are warnings.
          fig = figures.save_denoising_figure(
              os.path.join(out_dir, f"{self.step}_denoise.png"), test, pics, res)
          npz = image_files.write_npz_atomically(
              os.path.join(out_dir, f"{self.step}_denoise.npz"), clean=test,
              sigmas=np.asarray(ev.denoise_sigmas), **{
                  f"{name}_sigma{key}": image_arrays.to_uint8(np.clip(img, -1, 1))
                  for key, outs in pics.items() for name, img in outs.items()})
          logging.info("Wrote %s and %s", fig, npz)
        except OSError as e:
          logging.warning("Could not write the denoising figure or arrays to %s (%s).", out_dir,
                          e.strerror or e)

    if is_main:
      try:
        result = _merge_json(json_path, result)
      except OSError as e:
        raise storage.WriteError(f"cannot write {json_path} ({e.strerror or e}); the samples drawn stay "
                           f"in {out_dir}/shards and the same command resumes from there.") from None
      logging.info("Wrote %s", json_path)
      if shard_dir:
        image_shards.ImageShards(shard_dir, {}).remove()
        try:
          os.rmdir(os.path.dirname(shard_dir))  # eval/shards/, once no job has shards there.
        except OSError:
          pass
    return result

  def _draw(self, num: int, shard_dir: str) -> tuple[np.ndarray, dict]:
    s = self.config.sampling
    logging.info("Sampling %d images with %s (%d steps) from step %d; rounds kept in %s until "
                 "the results are written.", num, s.method, s.num_steps, self.step, shard_dir)
    images, seconds = generation.draw(self.config, self.params, num, shard_dir=shard_dir,
                                      shard_identity={"checkpoint_step": self.step,
                                                      "workdir": self.workdir},
                                      guide_params=self.guide_params)
    return images, dict(method=s.method, num_steps=s.num_steps, eta=s.eta, seed=s.seed,
                        sampling_seconds=seconds, images_per_second=num / seconds,
                        **denoiser.autoguidance_settings(s))
