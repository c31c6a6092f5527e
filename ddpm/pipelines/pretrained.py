"""Portable weights: a trained model as one .safetensors file, and back, without its workdir.

`save_pretrained` (what `--mode=export` runs) writes the parameters with `settings_of(config)`
in the file's metadata (`ddpm.runtime.weights_file`) and the same settings as a .json beside
it; `load_pretrained` rebuilds everything sampling needs from the file alone:

    p = ddpm.load_pretrained("model_step20000_ema.safetensors")
    images, _ = ddpm.draw(p.config, p.params, 16, guide_params=p.guide_params)  # Its sampler.
    # ddpm.sample directly: pass the model's prediction type (eps, x0 or v) with the sampler.
    out = ddpm.sample("ddim", p.denoise_fn(), p.schedule, jax.random.PRNGKey(0),
                      (16,) + p.image_shape, num_steps=50,
                      prediction_type=p.config.diffusion.prediction_type).samples

The settings (a JSON object):

  model            config.model, every key (the U-Net: ch, ch_mult, ..., num_classes, dtype)
  diffusion        config.diffusion, every key (the schedule and the prediction type)
  data             config.data.dataset, image_size and channels (images are H = W = image_size)
  sampling         config.sampling of the exporting run, less where the weights came from
                   (pretrained, checkpoint_step, use_ema) and autoguidance (below): the
                   defaults of `Pretrained.config`
  checkpoint_step  the training step of the weights
  weights          "ema" (the EMA parameters) or "params" (the raw ones)
  autoguidance     only when the exporting config samples with autoguidance: its weight,
                   guide_step, guide_average_steps, guide_use_ema, guide_t_min and guide_t_max;
                   the guide's
                   parameters are then in the file too, under the top-level key
                   "autoguidance_guide" (tensors "autoguidance_guide/<path>")

A job given such a file (config.sampling.pretrained) runs with `config_with_settings(config,
settings)`: the model, diffusion and data keys above replaced by the file's, so the samples are
bit-identical to those of the exporting run's checkpoint whatever the rest of the config says.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import ml_collections
import numpy as np
from absl import logging

from ddpm.diffusion import schedules
from ddpm.diffusion.schedules import Schedule
from ddpm.models import build
from ddpm.pipelines import denoiser
from ddpm.data import image_folder
from ddpm.runtime import checkpointing, storage, weights_file

SECTIONS = ("model", "diffusion")  # Replaced whole.
DATA_KEYS = ("dataset", "image_size", "channels")
# Where a job's weights come from: not the model's settings.
AUTOGUIDANCE_KEYS = denoiser.AUTOGUIDANCE_KEYS
SOURCE_KEYS = ("pretrained", "checkpoint_step", "use_ema") + AUTOGUIDANCE_KEYS
GUIDE = "autoguidance_guide"  # The guide's subtree in a file that holds one.
WEIGHTS = ("ema", "params")
SUFFIX = weights_file.SUFFIX


def jsonable(value):
  """`value` as JSON gives it back (tuples become lists), for comparisons with a file's (or
  a run's config.json)."""
  return json.loads(json.dumps(value))


def _tuples(value):
  """JSON lists back to the tuples configs hold (ch_mult, attn_resolutions, ...)."""
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def settings_of(config, step: int = 0, guided: bool = False) -> dict:
  """The settings exported with `config`'s weights of training step `step` (see the module
  docstring), as a JSON-ready dict: tuples are lists. `guided`: the file holds the guide of
  config.sampling's autoguidance too, whose settings go under "autoguidance"."""
  sampling = {k: v for k, v in config.sampling.to_dict().items() if k not in SOURCE_KEYS}
  settings = {
      "model": config.model.to_dict(),
      "diffusion": config.diffusion.to_dict(),
      "data": {k: config.data[k] for k in DATA_KEYS},
      "sampling": sampling,
      "checkpoint_step": int(step),
      "weights": "ema" if config.sampling.use_ema else "params",
  }
  if guided:
    settings["autoguidance"] = denoiser.autoguidance_settings(config.sampling)
  return jsonable(settings)


def split_guide(tree: dict) -> tuple[dict, dict | None]:
  """(the model's parameters, the guide's or None) of a file's parameter tree."""
  tree = dict(tree)
  return tree, tree.pop(GUIDE, None)


def _section(settings: dict, name: str, source: str) -> dict:
  value = settings.get(name)
  if not isinstance(value, dict):
    raise ValueError(f"{source}: its settings have no {name!r} object; allowed: settings written "
                     "by --mode=export (model, diffusion, data).")
  return value


def _check_settings(settings: dict, source: str) -> None:
  for name in SECTIONS + ("data",):
    _section(settings, name, source)
  missing = [k for k in DATA_KEYS if k not in settings["data"]]
  if missing:
    raise ValueError(f"{source}: its data settings lack {', '.join(missing)}; allowed: settings "
                     f"written by --mode=export (data: {', '.join(DATA_KEYS)}).")
  if settings.get("weights", "ema") not in WEIGHTS:
    raise ValueError(f"{source}: its settings have weights={settings.get('weights')!r}; allowed: "
                     f"{', '.join(WEIGHTS)}.")


def _replaced(settings: dict, source: str) -> list[tuple[str, str, object]]:
  """(section, key, value) of every config value the settings replace."""
  _check_settings(settings, source)
  out = [(s, k, v) for s in SECTIONS for k, v in settings[s].items()]
  return out + [("data", k, settings["data"][k]) for k in DATA_KEYS]


def config_with_settings(config, settings: dict, source: str = "the settings"):
  """A copy of `config` (locked or not) with the model and diffusion sections and
  data.dataset, image_size and channels replaced by those of `settings`, and
  sampling.use_ema telling which weights the file holds. Keys of this config that the settings
  lack (a file of an older version) keep this config's values; one-line ValueError for a key
  this config lacks or a value of the wrong type. `source` names the settings in errors."""
  config = config.copy_and_resolve_references()
  folder = image_folder.DATASET
  if config.data.dataset == folder and settings["data"].get("dataset", folder) != folder:
    config.data.data_dir = ""  # A folder is no TFDS data dir for the file's TFDS dataset.
  for section, key, value in _replaced(settings, source):
    if key not in config[section]:
      raise ValueError(f"{source}: its settings have {section}.{key}, which this version of ddpm "
                       f"does not know; allowed: {', '.join(sorted(config[section].keys()))}.")
    try:
      config[section][key] = _tuples(value)
    except (TypeError, ValueError) as e:
      raise ValueError(f"{source}: its settings have {section}.{key}={value!r}, which config."
                       f"{section}.{key} cannot take ({str(e).splitlines()[0]}).") from None
  config.sampling.use_ema = settings.get("weights", "ema") == "ema"
  guide = settings.get("autoguidance") or {}
  for key in ("guide_step", "guide_use_ema"):  # Which guide the file holds, if any.
    if key in guide:
      config.sampling[key] = guide[key]
  if guide:  # Files before guide_average_steps hold the guide_step checkpoint's alone.
    config.sampling.guide_average_steps = _tuples(guide.get("guide_average_steps", []))
  if guide and not denoiser.autoguided(config.sampling):
    logging.info("%s holds an autoguidance guide (exported with weight %g); "
                 "config.sampling.autoguidance_weight=0 samples without it.", source,
                 guide.get("autoguidance_weight", 0.0))
  return config


def config_from_settings(settings: dict, source: str = "the settings") -> ml_collections.ConfigDict:
  """A config of `settings` alone: model, diffusion, data (the exported keys) and sampling
  (the exporting run's, with use_ema and checkpoint_step of the weights)."""
  _check_settings(settings, source)
  sampling = dict(settings.get("sampling") or {})
  sampling.update(use_ema=settings.get("weights", "ema") == "ema", pretrained="",
                  checkpoint_step=int(settings.get("checkpoint_step", 0)))
  sampling.update(settings.get("autoguidance") or {})
  return ml_collections.ConfigDict({
      "model": {k: _tuples(v) for k, v in settings["model"].items()},
      "diffusion": dict(settings["diffusion"]),
      "data": {k: settings["data"][k] for k in DATA_KEYS},
      "sampling": {k: _tuples(v) for k, v in sampling.items()},
  })


def param_template(config):
  """The parameters of `config`'s model as jax.ShapeDtypeStructs (nothing computed)."""
  model, shape = build.create_model(config), build.image_shape(config)
  return jax.eval_shape(lambda: build.init_params(model, jax.random.PRNGKey(0), shape))


def check_params(params, template, source: str):
  """`params` in the tree structure and dtypes of `template` (the model's parameters, arrays
  or ShapeDtypeStructs) as host numpy arrays, like `checkpointing.restore_params`, after
  checking every '/'-joined path and shape; one-line ValueError naming `source` and the first
  difference, or a parameter holding NaN/Inf."""
  have, want = checkpointing.param_shapes(params), checkpointing.param_shapes(template)
  diffs = [name for name in sorted(set(have) | set(want)) if have.get(name) != want.get(name)]
  if diffs:
    name = diffs[0]
    raise ValueError(f"{source}: {len(diffs)} parameter(s) differ from the model of its settings, "
                     f"e.g. {name}: file {have.get(name, 'missing')} vs model "
                     f"{want.get(name, 'missing')}; allowed: the parameters of that model.")
  stored = checkpointing.leaves_by_path(params)
  leaves = jax.tree_util.tree_leaves(template)
  params = jax.tree_util.tree_unflatten(
      jax.tree_util.tree_structure(template),
      [np.asarray(stored[name], leaf.dtype)
       for name, leaf in zip(checkpointing.leaves_by_path(template), leaves)])
  bad = checkpointing.nonfinite_arrays(params)
  if bad:
    raise ValueError(f"{source}: parameter {bad[0]} holds NaN/Inf ({len(bad)} such arrays).")
  return params


def load_params(path: str, config, guide: bool = False) -> tuple[object, dict]:
  """(params, settings) of the file at `path` for `config`'s model: one-line ValueError when
  `config` is not the file's (a model, diffusion or data value differs: set the config up with
  `config_with_settings`, as `ddpm.jobs.setup_job` does) or the shapes differ. With `guide`,
  the parameters are those of its autoguidance guide (one-line ValueError if it holds none)."""
  source = f"config.sampling.pretrained={path}"
  tree, settings = weights_file.load(path)
  for section, key, value in _replaced(settings, source):
    mine = jsonable(config[section].get(key)) if key in config[section] else "missing"
    if mine != value:
      raise ValueError(f"{source} was exported with {section}.{key}={value!r}, but config."
                       f"{section}.{key}={mine!r}; set the job up with ddpm.jobs.setup_job (it "
                       "takes the file's settings) or pipelines.pretrained.config_with_settings.")
  params, guide_params = split_guide(tree)
  if guide:
    if guide_params is None:
      raise ValueError(f"{source} holds no autoguidance guide (exported from a config without "
                       "autoguidance); allowed: config.sampling.autoguidance_weight=0.")
    return check_params(guide_params, param_template(config), source + " (its guide)"), settings
  return check_params(params, param_template(config), source), settings


@dataclasses.dataclass
class Pretrained:
  """What `load_pretrained` gives: the U-Net, its parameters, the noise schedule, and the
  config they were built from (model, diffusion, data, sampling; see `config_from_settings`)."""
  model: object
  params: object
  schedule: Schedule
  config: ml_collections.ConfigDict
  guide_params: object = None  # The autoguidance guide's, when the file holds one.

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of the model's images."""
    return build.image_shape(self.config)

  @property
  def step(self) -> int:
    """The training step of the weights."""
    return self.config.sampling.checkpoint_step

  def denoise_fn(self, labels=None, guidance_weight: float = 0.0):
    """f(x_t, t) of these weights for `ddpm.sample` (`ddpm.pipelines.denoiser.make_denoise_fn`):
    class-conditional models take `labels` [B] and a guidance weight. A file that holds a guide
    gives the autoguided function of its settings (`config.sampling`)."""
    sampling = self.config.sampling.copy_and_resolve_references()
    sampling.guidance_weight = guidance_weight
    if self.guide_params is None:
      sampling.autoguidance_weight = 0.0
    return denoiser.sampling_denoise_fn(self.model, self.params, sampling,
                                        self.schedule.num_timesteps, labels, self.guide_params)


def load_pretrained(path: str) -> Pretrained:
  """The model, parameters (bit-identical to the exported ones), schedule and config of the
  .safetensors file at `path` written by `--mode=export` / `save_pretrained`; no workdir or
  config file needed. One-line ValueError for a missing file, a file that is not safetensors,
  one without ddpm metadata, or parameters that do not fit the model of its settings."""
  tree, settings = weights_file.load(path)
  params, guide_params = split_guide(tree)
  config = config_from_settings(settings, path)
  try:
    model = build.create_model(config)
    schedule = schedules.schedule_from_config(config.diffusion)
    template = param_template(config)
  except (KeyError, AttributeError, TypeError, ValueError) as e:
    reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    raise ValueError(f"{path}: its settings do not build a model ({reason}).") from None
  config.sampling.pretrained = os.path.abspath(path)
  if guide_params is not None:
    guide_params = check_params(guide_params, template, path + " (its guide)")
  return Pretrained(model, check_params(params, template, path), schedule, config, guide_params)


def settings_path(path: str) -> str:
  """The .json beside the .safetensors file `path`."""
  return (path[:-len(SUFFIX)] if path.endswith(SUFFIX) else path) + ".json"


def save_pretrained(path: str, config, params, step: int = 0, guide_params=None) -> dict:
  """Writes `params` (of `config`'s model, trained for `step` steps), with `guide_params` its
  autoguidance guide's if given, and `settings_of(config, step, guided)` to `path` (a .safetensors name; its directory is created) and the settings to the
  .json beside it, both atomically. Returns {"path", "json", "bytes", "num_params",
  "settings"}; one-line ValueError for another suffix, storage.WriteError when the storage
  refuses the write."""
  if not isinstance(path, str) or not path.endswith(SUFFIX):
    raise ValueError(f"export path {path!r} must end with {SUFFIX}.")
  settings = settings_of(config, step, guided=guide_params is not None)
  params = check_params(params, param_template(config), f"the parameters for {path}")
  tree = params
  if guide_params is not None:
    tree = {**params, GUIDE: check_params(guide_params, param_template(config),
                                          f"the guide's parameters for {path}")}
  json_path = settings_path(path)
  text = json.dumps(settings, indent=2, sort_keys=True) + "\n"
  target = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(target, exist_ok=True)
    target = path
    weights_file.save(path, tree, settings)
    target = json_path
    storage.write_atomically(json_path, lambda f: f.write(text.encode()))
  except OSError as e:
    raise storage.WriteError(f"cannot write {target} ({e.strerror or e}); free space (or make it "
                             "writable) and rerun the same command.") from None
  num_params = sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
  return {"path": path, "json": json_path, "bytes": os.path.getsize(path),
          "num_params": num_params, "settings": settings}
