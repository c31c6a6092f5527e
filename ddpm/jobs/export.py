"""`--mode=export`: a checkpoint's weights and settings as one portable .safetensors file.

The checkpoint is chosen as for `--mode=sample` (config.sampling.checkpoint_step, use_ema:
EMA or raw parameters). It is written to config.export.path, or by default to
`<workdir>/export/model_step<S>_<ema|params>.safetensors`, with the model, diffusion and data
settings in the file's metadata and in a .json of the same name beside it
(`ddpm.pipelines.pretrained`). `ddpm.load_pretrained(path)` then rebuilds the model without
the workdir or config file, and every sampling, evaluation and editing mode reads the file
with --config.sampling.pretrained=<path>. When config.sampling asks for autoguidance, the
guide's parameters (checkpoint sampling.guide_step, or its mean with guide_average_steps) go
into the same file, so that sampling from the file is guided as sampling from the workdir is.
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import logging

from ddpm.jobs import config_validation, restore
from ddpm.pipelines import denoiser, pretrained


def validate_export_config(config) -> None:
  """One-line ValueError for a bad config.export.path."""
  path = config.export.path
  if not isinstance(path, str) or (path and not path.endswith(pretrained.SUFFIX)):
    raise ValueError(f"config.export.path={path!r} must end with {pretrained.SUFFIX} (empty: "
                     f"<workdir>/export/model_step<S>_<ema|params>{pretrained.SUFFIX}).")


def check_training_config(config, workdir: str) -> None:
  """The model and diffusion settings that go into the file must be those the run trained
  with (workdir/config.json): the parameters' shapes are checked on restore, but a different
  prediction type, schedule or head count would fit them and write a file that samples
  garbage. One-line ValueError naming the first key that differs; no config.json: a warning."""
  if config.sampling.get("pretrained", ""):
    return
  path = os.path.join(os.path.abspath(workdir), "config.json")
  try:
    with open(path) as f:
      trained = json.load(f)
  except (OSError, ValueError):
    logging.warning("No readable %s: the exported settings are this command's config, not "
                    "checked against the training run's.", path)
    return
  for section in ("model", "diffusion"):
    for key in config[section].keys():
      if key in trained.get(section, {}) and pretrained.jsonable(
          trained[section][key]) != pretrained.jsonable(config[section][key]):
        raise ValueError(
            f"config.{section}.{key}={config[section][key]!r} but the run in {workdir} trained "
            f"with {trained[section][key]!r} ({path}); pass the training run's config (or "
            f"--config.{section}.{key}=...) so that the file describes its weights.")


@dataclasses.dataclass
class ExportJob:
  config: object
  workdir: str
  params: object
  step: int
  guide_params: object = None  # Autoguidance's guide, exported with the model when asked for.

  @staticmethod
  def validate(config) -> None:
    """The config-only checks of `setup`: one-line ValueError for the first bad value."""
    config_validation.validate_config(config)
    validate_export_config(config)

  @classmethod
  def setup(cls, config, workdir: str) -> "ExportJob":
    """Checks inputs and restores the chosen checkpoint; one-line errors for bad input."""
    cls.validate(config)
    check_training_config(config, workdir)
    workdir, params, step = restore.restore_params(config, workdir)
    return cls(config, workdir, params, step, restore.restore_guide_params(config, workdir, step))

  def default_path(self) -> str:
    weights = "ema" if self.config.sampling.use_ema else "params"
    return os.path.join(self.workdir, "export",
                        f"model_step{self.step}_{weights}{pretrained.SUFFIX}")

  def run(self) -> dict:
    """Writes the file and its .json; returns {"path", "json", "bytes", "num_params",
    "settings"} (see `pretrained.save_pretrained`)."""
    path = os.path.abspath(self.config.export.path or self.default_path())
    out = pretrained.save_pretrained(path, self.config, self.params, self.step, self.guide_params)
    logging.info("Exported the %s parameters of checkpoint step %d%s to %s (%.2f MB, %d "
                 "parameters) and their settings to %s.", out["settings"]["weights"], self.step,
                 "" if self.guide_params is None else
                 f" and of its autoguidance guide ({denoiser.describe_guide(self.config.sampling)})",
                 path, out["bytes"] / 1e6, out["num_params"], out["json"])
    return out
