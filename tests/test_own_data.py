"""Your own images in: a folder of coloured pictures this test draws itself trains the RGB
configs (folder64 at 64x64, cifar10's U-Net layout at 32x32), resumes, samples, and runs
--mode=denoise and --mode=inpaint on the same folder; the built-in configs resolve by name, also
from an installed wheel outside the repository."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image, ImageDraw


from ddpm import configs, jobs, main
from ddpm.data import input_pipeline
from ddpm.diffusion import schedules
from ddpm.models import build
from ddpm.training import optimizer, train_step

REPO = pathlib.Path(__file__).resolve().parents[1]


def draw_shapes(root, n=48, seed=0, classes=("circles", "squares")):
  """n pictures of a filled circle or square (by class folder) of a random colour on a random
  background, at mixed sizes (64x64, 80x64, 48x56) and formats (PNG, JPEG, WebP)."""
  rng = np.random.default_rng(seed)
  sizes, formats = ((64, 64), (80, 64), (48, 56)), ("png", "jpg", "webp")
  for i in range(n):
    kind = classes[i % 2]
    w, h = sizes[i % 3]
    im = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 256, 3)))
    r = int(rng.integers(min(w, h) // 6, min(w, h) // 3))
    cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
    box = (cx - r, cy - r, cx + r, cy + r)
    fill = tuple(int(v) for v in rng.integers(0, 256, 3))
    (ImageDraw.Draw(im).ellipse if kind == "circles" else ImageDraw.Draw(im).rectangle)(box, fill)
    os.makedirs(os.path.join(root, kind), exist_ok=True)
    im.save(os.path.join(root, kind, f"{i:04d}.{formats[i % 3]}"), quality=95)
  return str(root)


def _config(name, folder, **overrides):
  c = configs.get(name)
  c.data.data_dir = folder
  for dotted, value in overrides.items():
    node = c
    *path, leaf = dotted.split("__")
    for part in path:
      node = node[part]
    node[leaf] = value
  return c


FAST = dict(training__batch_size=8, training__checkpoint_every_steps=2, training__log_every_steps=1,
            training__sample_every_steps=0, sampling__num_steps=3, sampling__num_samples=8,
            sampling__batch_size=8, edit__num_images=4, edit__num_steps=3, edit__jump_n_sample=1,
            edit__jump_length=1)


def test_an_rgb_folder_trains_resumes_samples_denoises_and_inpaints(tmp_path):
  folder = draw_shapes(tmp_path / "shapes")
  workdir = str(tmp_path / "run")
  # Train 2 steps, then the same run to 4: it resumes from the checkpoint of step 2.
  jobs.setup_job("train", _config("folder64", folder, training__num_train_steps=2, **FAST),
                 workdir).run()
  trainer = jobs.setup_job("train", _config("folder64", folder, training__num_train_steps=4,
                                            **FAST), workdir)
  assert trainer.start_step == 2
  state = trainer.run()
  assert int(state.step[0] if np.ndim(state.step) else state.step) == 4
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  c = _config("folder64", folder, **FAST)
  out = jobs.setup_job("sample", c, workdir).run()
  assert out["images"].shape == (8, 64, 64, 3) and out["images"].dtype == np.uint8
  assert os.path.isfile(out["png"]) and os.path.isfile(out["npz"])
  # The editing modes read the folder's held-out 10% (data.eval_split = train[90%:]).
  denoised = jobs.setup_job("denoise", c, workdir).run()
  inpainted = jobs.setup_job("inpaint", c, workdir).run()
  for result in (denoised, inpainted):
    files = [v for v in result.values() if isinstance(v, str) and v.endswith(".png")]
    assert files and all(os.path.isfile(f) for f in files), result.keys()


def test_cifar10_config_takes_a_folder_and_its_train_step_fits_the_batches(tmp_path):
  """The DDPM paper's CIFAR-10 U-Net (35.7 M parameters) on data that is not CIFAR-10: a folder
  of pictures fitted to 32x32. Compiling and running its train step takes ~3 minutes on 2 cores
  (measured in experiments/own_data/README.md), so here the step is traced abstractly
  (jax.eval_shape) on a real batch of the folder: shapes, dtypes, the optimizer and the loss."""
  folder = draw_shapes(tmp_path / "shapes", n=16)
  c = _config("cifar10", folder, data__dataset="image_folder", data__resize_method="resize",
              training__batch_size=8)
  jobs.validate("train", c)
  batch = next(input_pipeline.create_train_iterator(c, 0))
  n = jax.local_device_count()
  assert batch["image"].shape == (n, 8 // n, 32, 32, 3) and batch["image"].dtype == np.float32
  model = build.create_model(c)
  tx, lr_fn = optimizer.create_optimizer(c)
  state = jax.eval_shape(lambda: train_step.create_train_state(jax.random.PRNGKey(0), c, model, tx))
  assert sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(state.params)) == 35_746_307
  replicated = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct((n, *s.shape), s.dtype), state)
  p_step = train_step.make_p_train_step(model, schedules.schedule_from_config(c.diffusion), tx,
                                        lr_fn, c)
  new_state, metrics = jax.eval_shape(p_step, replicated, batch)
  assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(replicated)
  assert metrics["loss"].shape == (n,)


def test_every_built_in_config_resolves_by_name_and_as_a_file(tmp_path):
  names = configs.names()
  assert {"mnist", "tiny", "folder", "folder64", "cifar10", "default"} <= set(names)
  for name in names:
    shim = REPO / "configs" / f"{name}.py"
    assert shim.is_file(), f"configs/{name}.py (the repository's name for the built-in) is missing"
    # The file the command line loads for configs/<name>.py is the built-in's config.
    assert main._load_config_file(str(shim)).to_dict() == configs.get(name).to_dict()
  assert configs.resolve("mnist") == configs.path("mnist")
  assert configs.resolve("mnist:abc") == configs.path("mnist") + ":abc"
  assert configs.resolve("configs/mnist.py") == "configs/mnist.py"
  # A directory named like a built-in (a workdir called mnist) does not hide it.
  cwd = os.getcwd()
  os.chdir(tmp_path)
  try:
    os.mkdir("mnist")
    assert configs.resolve("mnist") == configs.path("mnist")
  finally:
    os.chdir(cwd)
  with pytest.raises(ValueError, match=r"--config=nope: no such file or built-in config; allowed: "):
    configs.get("nope")


def test_the_wheel_installs_outside_the_repository_with_its_configs_and_console_script(tmp_path):
  """The built wheel, installed into a fresh virtual environment (its dependencies from this
  environment's site-packages), resolves every built-in config and runs the `ddpm` script."""
  wheels = tmp_path / "wheels"
  build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(wheels), str(REPO)], capture_output=True, text=True,
                         timeout=300)
  assert build.returncode == 0, build.stderr[-2000:]
  wheel = next(wheels.glob("ddpm-*.whl"))
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True,
                 timeout=120)
  python, script = venv / "bin" / "python", venv / "bin" / "ddpm"
  install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps",
                            "--force-reinstall", str(wheel)], capture_output=True, text=True,
                           timeout=300)
  assert install.returncode == 0, install.stderr[-2000:]
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  code = ("import json, ddpm, ddpm.configs as c\n"
          "print(json.dumps([ddpm.__file__, {n: c.get(n).model.ch for n in c.names()}]))")
  out = subprocess.run([str(python), "-c", code], cwd=elsewhere, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  where, channels = json.loads(out.stdout.strip().splitlines()[-1])
  assert where.startswith(str(venv)), where  # The wheel's copy, not the checkout.
  # The wheel's built-in configs are the checkout's, every one of them.
  assert channels == {n: configs.get(n).model.ch for n in configs.names()}, channels
  assert len(channels) >= 10 and {"mnist", "folder64", "tiny"} <= set(channels), channels
  # The console script: a built-in config by name, the mode as its first word, a bad key's
  # one-line error (exit 2) before any JAX work.
  run = subprocess.run([str(script), "sample", "--config=tiny", f"--workdir={tmp_path / 'w'}",
                        "--config.sampling.no_such_key=1"], cwd=elsewhere, capture_output=True,
                       text=True, timeout=300)
  assert run.returncode == 2, run.stderr[-2000:]
  assert run.stderr.strip().splitlines()[-1].startswith(
      "ddpm: error: --config.sampling.no_such_key=1: config.sampling has no key 'no_such_key'"), \
      run.stderr[-2000:]
