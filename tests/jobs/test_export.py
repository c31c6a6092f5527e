"""Portable weights: --mode=export's .safetensors file, ddpm.load_pretrained, and every mode
reading the file through config.sampling.pretrained instead of a workdir's checkpoints."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.flax
from hypothesis import given, settings, strategies as st

import ddpm
from ddpm import jobs
from ddpm.configs import tiny
from ddpm.jobs import export as export_job, restore, sample as sample_job
from ddpm.pipelines import pretrained
from ddpm.runtime import checkpointing, weights_file
from ddpm.training import finetune
from tiny_state import tiny_state

STEP = 3


def _bits(tree) -> dict:
  """{path: (dtype, shape, raw bytes)}: equal exactly when the trees are bit-identical."""
  return {k: (np.asarray(v).dtype.str, np.shape(v), np.asarray(v).tobytes())
          for k, v in checkpointing.leaves_by_path(tree).items()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A workdir with checkpoint STEP of the tiny model whose EMA parameters differ from its raw
  ones, and the raw and EMA parameters."""
  path = tmp_path_factory.mktemp("run")
  _, _, _, _, state, meta = tiny_state()
  ema = jax.tree_util.tree_map(
      lambda p: (np.asarray(p) + 0.01 * np.sin(np.arange(p.size).reshape(p.shape))).astype(p.dtype),
      state.params)
  state = state.replace(step=jnp.asarray(STEP, jnp.int32), ema_params=ema)
  manager = checkpointing.create_manager(str(path), max_to_keep=None)
  checkpointing.save(manager, STEP, state, meta)
  manager.wait_until_finished()
  manager.close()
  return path, state.params, ema


def sample_config():
  c = tiny.get_config()
  c.sampling.num_samples, c.sampling.batch_size, c.sampling.num_steps = 4, 4, 2
  return c


@pytest.fixture(scope="module")
def exported(run):
  """--mode=export of the run with the default path: the job's result."""
  workdir, _, _ = run
  return jobs.setup_job("export", sample_config(), str(workdir)).run()


# Nested dicts of float32/bfloat16 arrays, as Flax parameter pytrees are.
_KEYS = st.text("abcXYZ_019", min_size=1, max_size=6)
_ARRAYS = st.tuples(st.lists(st.integers(0, 3), max_size=3), st.sampled_from(["float32", "bfloat16"]),
                    st.integers(0, 2**32 - 1)).map(
    lambda a: jnp.asarray(np.random.default_rng(a[2]).standard_normal(a[0]) * 100, a[1]))
_TREES = st.recursive(_ARRAYS, lambda sub: st.dictionaries(_KEYS, sub, min_size=1, max_size=3),
                      max_leaves=8).filter(lambda t: isinstance(t, dict))
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8),
                     lambda sub: st.lists(sub, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                              sub, max_size=3),
                     max_leaves=6)


@settings(max_examples=10)
@given(tree=_TREES, extra=st.dictionaries(st.text(max_size=5), _JSON, max_size=3))
def test_a_saved_pytree_loads_back_bit_identical_with_its_settings(tmp_path_factory, tree, extra):
  path = str(tmp_path_factory.mktemp("w") / "w.safetensors")
  assert weights_file.save(path, tree, extra) == path
  params, got = weights_file.load(path)
  assert got == extra and weights_file.read_settings(path) == extra
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(tree)
  assert _bits(params) == _bits(tree)
  # A plain safetensors reader sees the same tensors by their '/'-joined paths.
  plain = safetensors.flax.load_file(path)
  assert sorted(plain) == sorted(checkpointing.leaves_by_path(tree))


def _model_configs():
  return st.fixed_dictionaries({
      "ch": st.sampled_from([8, 16, 32]), "ch_mult": st.sampled_from([(1,), (1, 2), (1, 2, 2)]),
      "num_res_blocks": st.integers(1, 3), "attn_resolutions": st.sampled_from([(), (8,), (4, 8)]),
      "num_classes": st.integers(0, 10), "dtype": st.sampled_from(["float32", "bfloat16"]),
      "num_timesteps": st.integers(10, 2000), "beta_schedule": st.sampled_from(["linear", "cosine"]),
      "image_size": st.sampled_from([16, 32]), "channels": st.sampled_from([1, 3]),
      "dataset": st.sampled_from(["mnist", "cifar10"]), "use_ema": st.booleans()})


@settings(max_examples=10)
@given(a=_model_configs(), b=_model_configs(), step=st.integers(0, 10**7))
def test_a_config_with_the_settings_of_another_has_exactly_its_settings(a, b, step):
  """settings_of(config_with_settings(y, settings_of(x))) == settings_of(x) up to the sampler
  section (which stays y's); lists read from JSON are tuples in the config again."""
  def config(d):
    c = tiny.get_config()
    for k in ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "num_classes", "dtype"):
      c.model[k] = d[k]
    c.diffusion.num_timesteps, c.diffusion.beta_schedule = d["num_timesteps"], d["beta_schedule"]
    c.data.image_size, c.data.channels, c.data.dataset = d["image_size"], d["channels"], d["dataset"]
    c.sampling.use_ema = d["use_ema"]
    c.lock()
    return c
  x, y = config(a), config(b)
  s = json.loads(json.dumps(pretrained.settings_of(x, step)))  # As read from a file.
  z = pretrained.config_with_settings(y, s)
  got = pretrained.settings_of(z, step)
  assert {k: v for k, v in got.items() if k != "sampling"} == {
      k: v for k, v in s.items() if k != "sampling"}
  assert got["sampling"] == pretrained.settings_of(y, step)["sampling"]
  assert tuple(z.model.ch_mult) == z.model.ch_mult == tuple(a["ch_mult"])  # Tuples again.
  assert y.model.ch == b["ch"]  # A copy: y is unchanged.
  assert pretrained.config_from_settings(s).model.to_dict() == x.model.to_dict()


def test_export_writes_the_checkpoints_ema_parameters_and_settings(run, exported):
  workdir, raw, ema = run
  assert exported["path"] == str(workdir / "export" / f"model_step{STEP}_ema.safetensors")
  with open(exported["json"]) as f:
    assert json.load(f) == exported["settings"] == weights_file.read_settings(exported["path"])
  s = exported["settings"]
  assert (s["checkpoint_step"], s["weights"], s["data"]) == (
      STEP, "ema", {"dataset": "mnist", "image_size": 16, "channels": 1})
  assert s["model"]["ch_mult"] == [1, 2] and s["diffusion"]["num_timesteps"] == 100
  assert exported["num_params"] == sum(p.size for p in jax.tree_util.tree_leaves(ema))
  p = ddpm.load_pretrained(exported["path"])
  assert _bits(p.params) == _bits(ema) != _bits(raw)
  assert jax.tree_util.tree_structure(p.params) == jax.tree_util.tree_structure(ema)
  assert p.image_shape == (16, 16, 1) and p.step == STEP and p.model.ch_mult == (1, 2)
  np.testing.assert_array_equal(p.schedule.betas, ddpm.schedule_from_config(
      tiny.get_config().diffusion).betas)
  # The notebook path: its denoiser fits ddpm.sample, and the exporting run's sampler settings
  # come along (traced only: sampling itself is the next test's).
  x = jax.ShapeDtypeStruct((2,) + p.image_shape, jnp.float32)
  assert jax.eval_shape(p.denoise_fn(), x, jax.ShapeDtypeStruct((2,), jnp.int32)).shape == x.shape
  assert p.config.sampling.method == "ddim" and p.config.sampling.use_ema


def test_export_of_the_raw_parameters_to_a_chosen_path(run, tmp_path):
  workdir, raw, _ = run
  c = sample_config()
  c.sampling.use_ema = False
  c.export.path = str(tmp_path / "sub" / "raw.safetensors")
  out = export_job.ExportJob.setup(c, str(workdir)).run()
  assert out["path"] == c.export.path and out["json"] == str(tmp_path / "sub" / "raw.json")
  p = ddpm.load_pretrained(c.export.path)
  assert _bits(p.params) == _bits(raw) and not p.config.sampling.use_ema
  c.export.path = str(tmp_path / "raw.npz")
  with pytest.raises(ValueError, match=r"^config.export.path='.*raw.npz' must end with "
                                       r"\.safetensors") as e:
    jobs.setup_job("export", c, str(workdir))
  assert "\n" not in str(e.value)


def test_sampling_from_the_file_is_bit_identical_whatever_the_config_and_needs_no_workdir(
    run, exported, tmp_path):
  workdir, _, _ = run
  original = jobs.setup_job("sample", sample_config(), str(workdir)).run()
  c = sample_config()  # Another model, schedule and image shape than the file's ...
  c.model.ch, c.model.ch_mult, c.model.num_res_blocks = 32, (1, 2, 2), 2
  c.diffusion.beta_schedule, c.data.image_size, c.data.channels = "cosine", 32, 3
  c.sampling.pretrained = exported["path"]
  c.lock()  # ... and locked, as --config gives it.
  fresh = tmp_path / "fresh"  # Does not exist: it only receives the outputs.
  job = jobs.setup_job("sample", c, str(fresh))
  assert job.step == STEP and job.config.model.ch == 16 and c.model.ch == 32
  out = job.run()  # The same compiled program as the original's: params are host arrays.
  assert out["npz"].startswith(str(fresh / "samples"))
  assert out["images"].shape == (4, 16, 16, 1)
  np.testing.assert_array_equal(out["images"], original["images"])

  # The restore path itself, as the other modes use it.
  params = restore.restore_params(job.config, str(fresh))[1]
  assert _bits(params) == _bits(run[2])
  # A job set up directly with a config that is not the file's is an error, not other samples.
  with pytest.raises(ValueError, match=r"was exported with model.ch=16, but config.model.ch=32; "
                                       r"set the job up with ddpm.jobs.setup_job") as e:
    sample_job.SampleJob.setup(c, str(fresh))
  assert "\n" not in str(e.value)


def _bad_files(tmp_path, exported):
  not_safetensors = tmp_path / "notes.safetensors"
  not_safetensors.write_text("just some text, not a safetensors header")
  foreign = tmp_path / "foreign.safetensors"
  safetensors.flax.save_file({"w": jnp.ones((2, 2))}, str(foreign), metadata={"format": "pt"})
  params, settings = weights_file.load(exported["path"])
  settings["model"]["ch"] = 8  # Settings that do not fit the parameters.
  other = tmp_path / "other.safetensors"
  weights_file.save(str(other), params, settings)
  return [(tmp_path / "missing.safetensors", "does not exist"),
          (not_safetensors, r"is not a safetensors file \(.*\); allowed"),
          (foreign, "is a safetensors file without ddpm metadata"),
          (other, r"parameter\(s\) differ from the model of its settings, e.g. .*: file \[")]


def test_bad_files_are_one_line_errors_naming_the_file(exported, tmp_path):
  for path, match in _bad_files(tmp_path, exported):
    with pytest.raises(ValueError, match=match) as e:
      ddpm.load_pretrained(str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value), e.value
    c = sample_config()
    c.sampling.pretrained = str(path)
    with pytest.raises(ValueError) as e:
      jobs.setup_job("sample", c, str(tmp_path / "out"))
    assert str(path) in str(e.value) and "\n" not in str(e.value), e.value
  assert not (tmp_path / "out").exists()


def test_training_takes_the_file_as_init_from_not_as_sampling_pretrained(run, exported, tmp_path):
  c = sample_config()
  c.sampling.pretrained = exported["path"]
  for call in (lambda: jobs.validate("train", c), lambda: jobs.setup_job("train", c, str(tmp_path))):
    with pytest.raises(ValueError, match=r"not by --mode=train; to fine-tune from the file, set "
                                         r"config.training.init_from=.*safetensors instead\.$"):
      call()
  _, _, _, _, state, meta = tiny_state()
  params, step = finetune.load_init_params(exported["path"], state.params, meta, "params")
  assert step == STEP and _bits(params) == _bits(run[2])
  other = tiny.get_config()
  other.model.ch = 8
  with pytest.raises(ValueError, match=r"^config.training.init_from=.*: \d+ parameter\(s\) "
                                       r"differ"):
    finetune.load_init_params(exported["path"], pretrained.param_template(other), meta)


def test_settings_of_an_unknown_key_or_without_a_model_are_one_line_errors():
  c = tiny.get_config()
  s = pretrained.settings_of(c)
  s["model"]["wings"] = 2
  with pytest.raises(ValueError, match=r"^f.safetensors: its settings have model.wings, which "
                                       r"this version of ddpm does not know; allowed: "):
    pretrained.config_with_settings(c, s, "f.safetensors")
  with pytest.raises(ValueError, match=r"^f.safetensors: its settings have no 'model' object"):
    pretrained.config_with_settings(c, {"diffusion": {}}, "f.safetensors")
  s = pretrained.settings_of(c)
  s["model"]["ch"] = "wide"
  with pytest.raises(ValueError, match=r"its settings have model.ch='wide', which config.model.ch "
                                       r"cannot take"):
    pretrained.config_with_settings(c, s, "f.safetensors")


def test_export_refuses_settings_the_run_did_not_train_with(run, tmp_path):
  # A run's config.json says how its weights were trained; a command-line config that differs
  # in a setting the shapes do not show (the prediction type) would write a file describing
  # other weights: one line naming the key. Without config.json, export goes on (a warning).
  workdir, _, _ = run
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  trained = sample_config()
  (copy / "config.json").write_text(trained.to_json_best_effort())
  export_job.check_training_config(trained, str(copy))  # The same settings: fine.
  other = sample_config()
  other.diffusion.prediction_type = "v"
  with pytest.raises(ValueError, match=r"^config.diffusion.prediction_type='v' but the run in "
                                       r".* trained with 'eps' .*config.json") as e:
    jobs.setup_job("export", other, str(copy))
  assert "\n" not in str(e.value)
  export_job.check_training_config(other, str(workdir))  # No config.json there.
