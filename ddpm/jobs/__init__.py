"""The jobs: one module per `--mode` of `python -m ddpm.main`, each a thin layer over the rest.

Every job is a class with `setup(config, workdir)` (checks the inputs with one-line errors,
restores what it needs; nothing is written before the checks pass) and `run()`. `setup_job` is
what `python -m ddpm.main --mode=<mode>` does, callable from a notebook:

    state = ddpm.jobs.setup_job("train", config, workdir).run()
    result = ddpm.jobs.setup_job("sample", config, workdir).run()

Jobs share only the lower modules `config_validation` (the whole config checked), `restore`
(a checkpoint's parameters) and `editing` (what inpaint, process and denoise share); no job
imports another.
"""

from __future__ import annotations

import jax

from ddpm.jobs import anomaly, denoise, evaluate, inpaint, process, sample, synthesize, train

JOBS = {"train": train.Trainer, "sample": sample.SampleJob, "eval": evaluate.EvalJob,
        "inpaint": inpaint.InpaintJob, "process": process.ProcessJob,
        "denoise": denoise.DenoiseJob, "synthesize": synthesize.SynthesizeJob,
        "anomaly": anomaly.AnomalyJob}
MODES = tuple(JOBS)


def validate(mode: str, config) -> None:
  """The config-only checks of `mode`'s job (no data, checkpoint or device touched): one-line
  ValueError for the first bad value; every shipped config passes them for every mode its
  model supports (tests/jobs/test_configs.py)."""
  if mode not in JOBS:
    raise ValueError(f"--mode={mode!r} is unknown; allowed: {', '.join(MODES)}.")
  JOBS[mode].validate(config)


def setup_job(mode: str, config, workdir: str):
  """The job of `mode` for `config` and `workdir`, set up (inputs checked, checkpoint restored);
  `.run()` runs it. Raises ValueError/RuntimeError with a one-line message for bad input."""
  if mode not in JOBS:
    raise ValueError(f"--mode={mode!r} is unknown; allowed: {', '.join(MODES)}.")
  if mode != "train" and jax.process_count() > 1:
    raise ValueError(f"--mode={mode} runs in a single process, but this run has "
                     f"{jax.process_count()} processes; allowed: --mode=train with several "
                     f"processes, other modes with one (--distributed=off).")
  return JOBS[mode].setup(config, workdir)
