"""Every shipped config is valid, and each kind of bad value gets a one-line error."""

import importlib
import pathlib

import pytest

from configs import cifar10, default, tiny
from ddpm import jobs
from ddpm.jobs import config_validation, train as train_job
from ddpm.pipelines import denoiser

CONFIGS = sorted(p for p in (pathlib.Path(__file__).parents[2] / "configs").glob("*.py")
                 if p.name != "__init__.py")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
  config = importlib.import_module(f"configs.{path.stem}").get_config()
  config_validation.validate_config(config)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_mode_accepts_every_shipped_config_without_overrides(path):
  """Each mode's own checks (edit steps, anomaly time steps, t0, ...) pass on every shipped
  config, so its defaults agree with its T; synthesize alone needs a conditional model."""
  config = importlib.import_module(f"configs.{path.stem}").get_config()
  for mode in jobs.MODES:
    if mode == "synthesize" and config.model.num_classes == 0:
      with pytest.raises(ValueError, match="needs a class-conditional model"):
        jobs.validate(mode, config)
    else:
      jobs.validate(mode, config)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_an_autoguided_shipped_config_keeps_its_guide_for_good(path):
  """The guide of a config whose sampler is autoguided is a checkpoint its training saves and
  never deletes, before its last step, so --mode=sample finds it after training."""
  config = importlib.import_module(f"configs.{path.stem}").get_config()
  if denoiser.autoguided(config.sampling):
    steps = train_job.guide_checkpoint_steps(config)
    assert config.sampling.guide_step in steps
    assert all(0 < s < config.training.num_train_steps for s in steps), steps


def test_cifar10_config_is_the_papers():
  c = cifar10.get_config()
  assert (c.model.ch, tuple(c.model.ch_mult), c.model.num_res_blocks) == (128, (1, 2, 2, 2), 2)
  assert tuple(c.model.attn_resolutions) == (16,) and c.model.dropout == 0.1
  assert (c.optim.learning_rate, c.optim.warmup_steps, c.optim.ema_decay) == (2e-4, 5000, 0.9999)
  assert c.training.batch_size == 128 and c.diffusion.num_timesteps == 1000
  assert c.diffusion.beta_schedule == "linear" and c.data.random_flip
  assert default.get_config().to_dict() == c.to_dict()


@pytest.mark.parametrize("key,value,match", [
    ("model.dtype", "float16", "model.dtype='float16'"),
    ("diffusion.beta_schedule", "exp", "beta_schedule='exp'"),
    ("diffusion.prediction_type", "score", "prediction_type='score'"),
    ("training.batch_size", 0, "batch_size=0"),
    ("training.num_train_steps", -5, "num_train_steps=-5"),
    ("model.ch", 0, "model.ch=0"),
    ("model.dropout", 1.0, "dropout=1.0"),
    ("optim.ema_decay", 1.0, "ema_decay=1.0"),
    ("optim.learning_rate", 0.0, "learning_rate=0.0"),
    ("sampling.num_steps", 101, "num_steps=101"),
    ("sampling.eta", -1.0, "eta=-1.0"),
    ("data.image_size", 15, "image_size=15"),
    ("model.attn_resolutions", (4,), "attn_resolutions=(4,)"),
    ("diffusion.beta_end", 2.0, "beta_end"),
])
def test_bad_values_give_one_line_errors(key, value, match):
  c = tiny.get_config()
  group, name = key.split(".")
  c[group][name] = value
  with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)")) as e:
    config_validation.validate_config(c)
  assert "\n" not in str(e.value)
