"""The jobs: one module per `--mode` of `python -m ddpm.main`, each a thin layer over the rest.

Every job is a class with `setup(config, workdir)` (checks the inputs with one-line errors,
restores what it needs; nothing is written before the checks pass) and `run()`. `setup_job` is
what `python -m ddpm.main --mode=<mode>` does, callable from a notebook:

    state = ddpm.jobs.setup_job("train", config, workdir).run()
    result = ddpm.jobs.setup_job("sample", config, workdir).run()

With config.sampling.pretrained (a .safetensors file of `--mode=export`), every mode but
train reads that file's weights instead of the workdir's checkpoints, and `setup_job` replaces
the config's model, diffusion and data settings by the file's first
(`ddpm.pipelines.pretrained.config_with_settings`).

Jobs share only the lower modules `config_validation` (the whole config checked), `restore`
(a checkpoint's parameters) and `editing` (what inpaint, process and denoise share); no job
imports another.
"""

from __future__ import annotations

import jax
from absl import logging

from ddpm.jobs import (anomaly, denoise, evaluate, export, inpaint, process, sample, synthesize,
                       train)
from ddpm.pipelines import denoiser, pretrained
from ddpm.runtime import weights_file

JOBS = {"train": train.Trainer, "sample": sample.SampleJob, "eval": evaluate.EvalJob,
        "inpaint": inpaint.InpaintJob, "process": process.ProcessJob,
        "denoise": denoise.DenoiseJob, "synthesize": synthesize.SynthesizeJob,
        "anomaly": anomaly.AnomalyJob, "export": export.ExportJob}
MODES = tuple(JOBS)
# The modes that draw with config.sampling's autoguidance (training: its grids; export: writes
# the guide into the file); the others, and files exported without a guide, run without it.
AUTOGUIDED_MODES = ("train", "sample", "eval", "synthesize", "export")


def _check_pretrained(mode: str, config) -> None:
  path = config.sampling.get("pretrained", "")
  if not isinstance(path, str):
    raise ValueError(f"config.sampling.pretrained={path!r} must be the path of a .safetensors "
                     "file written by --mode=export, or empty (the workdir's checkpoints).")
  if path and mode == "train":
    raise ValueError(f"config.sampling.pretrained={path} is read by the modes that use a trained "
                     "model, not by --mode=train; to fine-tune from the file, set "
                     f"config.training.init_from={path} instead.")


def validate(mode: str, config) -> None:
  """The config-only checks of `mode`'s job (no data, checkpoint or device touched): one-line
  ValueError for the first bad value; every shipped config passes them for every mode its
  model supports (tests/jobs/test_configs.py)."""
  if mode not in JOBS:
    raise ValueError(f"--mode={mode!r} is unknown; allowed: {', '.join(MODES)}.")
  _check_pretrained(mode, config)
  JOBS[mode].validate(config)


def setup_job(mode: str, config, workdir: str):
  """The job of `mode` for `config` and `workdir`, set up (inputs checked, checkpoint restored);
  `.run()` runs it. Raises ValueError/RuntimeError with a one-line message for bad input.

  With config.sampling.pretrained set, the job gets `config` with that file's settings."""
  if mode not in JOBS:
    raise ValueError(f"--mode={mode!r} is unknown; allowed: {', '.join(MODES)}.")
  if mode != "train" and jax.process_count() > 1:
    raise ValueError(f"--mode={mode} runs in a single process, but this run has "
                     f"{jax.process_count()} processes; allowed: --mode=train with several "
                     f"processes, other modes with one (--distributed=off).")
  _check_pretrained(mode, config)
  settings = {}
  if config.sampling.get("pretrained", ""):
    path = config.sampling.pretrained
    try:
      settings = weights_file.read_settings(path)
    except ValueError as e:
      raise ValueError(f"config.sampling.pretrained: {e}") from None
    config = pretrained.config_with_settings(config, settings, f"config.sampling.pretrained={path}")
  unguided_file = config.sampling.get("pretrained", "") and "autoguidance" not in settings
  if denoiser.autoguided(config.sampling) and (mode not in AUTOGUIDED_MODES or unguided_file):
    logging.info("Autoguidance (config.sampling.autoguidance_weight=%g) is off: %s.",
                 config.sampling.autoguidance_weight,
                 "the file was exported without a guide" if unguided_file
                 else f"--mode={mode} does not use it")
    config = config.copy_and_resolve_references()
    config.sampling.autoguidance_weight = 0.0
  return JOBS[mode].setup(config, workdir)
