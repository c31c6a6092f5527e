"""The command line on the real MNIST in TFDS_DATA_DIR: train, resume, sample, bad input."""

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from ddpm.runtime import allocator, xla_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    not (pathlib.Path(os.environ.get("TFDS_DATA_DIR", "/nonexistent")) / "mnist").is_dir(),
    reason="needs the prepared MNIST in TFDS_DATA_DIR")


def ddpm(workdir, *args, env=None):
  cmd = [sys.executable, "-m", "ddpm.main", "--config=configs/tiny.py", f"--workdir={workdir}", *args]
  if env is not None:  # Changes to this environment; None removes a variable.
    env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


def params_at(workdir, step):
  restored = ocp.StandardCheckpointer().restore(pathlib.Path(workdir) / "checkpoints" / str(step) / "state")
  return restored


def snapshot(workdir):
  root = pathlib.Path(workdir) / "checkpoints"
  return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """20 steps of the tiny config, then a restart that continues to 30, whose grids are
  autoguided by the mean of checkpoints 10 and 20 (sampling only: the training is the same)."""
  workdir = tmp_path_factory.mktemp("run")
  first = ddpm(workdir)
  assert first.returncode == 0, first.stderr[-3000:]
  second = ddpm(workdir, "--config.training.num_train_steps=30",
                "--config.sampling.autoguidance_weight=1", "--config.sampling.guide_step=20",
                "--config.sampling.guide_average_steps=(10,)")
  assert second.returncode == 0, second.stderr[-3000:]
  return workdir, first, second


def test_training_writes_checkpoints_samples_and_logs(trained):
  workdir, first, second = trained
  assert "step 20/20" in first.stderr and "images/s" in first.stderr and "ETA" in first.stderr
  grid = np.asarray(Image.open(workdir / "samples" / "step_0000020.png"))
  assert grid.ndim == 2 and grid.shape[0] > 16 and grid.std() > 0  # 4x4 grid of 16x16 images.
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  assert len(lines) >= 4 and all("loss" in line for line in lines)
  # The restart's last grid, after the guide's checkpoints: autoguided by their mean.
  assert "autoguided (weight 1) by the mean of the EMA parameters of steps 10, 20" in second.stderr
  assert "autoguided" not in first.stderr  # No guide asked for.
  assert np.asarray(Image.open(workdir / "samples" / "step_0000030.png")).std() > 0
  assert list(workdir.glob("events.out.tfevents.*")), "TensorBoard event file"


def test_restart_resumes_exactly_where_an_uninterrupted_run_would_be(trained, tmp_path):
  workdir, _, second = trained
  assert "from step 20" in second.stderr
  # The newest 2 (keep_checkpoints), and the guide's 10 and 20 for good.
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [10, 20, 30]
  # Uninterrupted, and with glibc's malloc where the others ran under tcmalloc (when this
  # machine has it, ddpm.runtime.allocator): neither a restart nor the allocator changes a bit.
  straight = ddpm(tmp_path, "--config.training.num_train_steps=30",
                  "--config.training.sample_every_steps=0",
                  env={"DDPM_NO_TCMALLOC": "1", "LD_PRELOAD": None})
  assert straight.returncode == 0, straight.stderr[-3000:]
  assert "Memory allocator: " not in straight.stderr
  if allocator.preload_env(os.environ, allocator.find_tcmalloc(), sys.platform,
                          xla_flags.accelerator_installed()) is not None:  # Then it ran under it.
    assert "Memory allocator: " in second.stderr and "tcmalloc" in second.stderr, second.stderr[-2000:]
  a, b = params_at(workdir, 30), params_at(tmp_path, 30)
  flat_a, flat_b = ocp.tree.to_flat_dict(a), ocp.tree.to_flat_dict(b)
  assert flat_a.keys() == flat_b.keys()
  for k in flat_a:
    np.testing.assert_array_equal(flat_a[k], flat_b[k], err_msg=str(k))


def test_a_killed_sample_job_resumes_from_its_shards_bit_identically(trained):
  """--mode=sample keeps each round in numbered shards; SIGKILLed midway and rerun with the same
  command, it draws only the missing rounds and writes the images an uninterrupted job does."""
  workdir, _, _ = trained
  args = ["--mode=sample", "--config.sampling.num_samples=256", "--config.sampling.batch_size=8",
          "--config.sampling.seed=5"]
  npz, shards = (workdir / "samples" / "ddim10_eta0_seed5_step30.npz",
                 workdir / "samples" / "ddim10_eta0_seed5_step30_n256.shards")
  full = ddpm(workdir, *args)
  assert full.returncode == 0, full.stderr[-3000:]
  reference = np.load(npz)["images"]
  assert reference.shape == (256, 16, 16, 1) and not shards.exists()  # Removed once written.
  npz.unlink()
  cmd = [sys.executable, "-u", "-m", "ddpm.main", "--config=configs/tiny.py",
         f"--workdir={workdir}", *args]
  proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                          text=True)
  for line in proc.stderr:
    if "sampled 40/256 images" in line:
      break
  proc.kill()
  proc.wait(timeout=60)
  done = sorted(shards.glob("shard_*.npy"))
  assert not npz.exists() and 5 <= len(done) < 32, len(done)
  resumed = ddpm(workdir, *args)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"of 32 rounds ({8 * len(done)} images) already drawn" in resumed.stderr, resumed.stderr[-2000:]
  np.testing.assert_array_equal(np.load(npz)["images"], reference)
  assert not shards.exists()


def test_sample_mode_writes_a_grid_and_uint8_npz(trained):
  workdir, _, _ = trained
  r = ddpm(workdir, "--mode=sample", "--config.sampling.num_samples=8",
           "--config.sampling.method=ddpm", "--config.sampling.num_steps=20",
           "--config.sampling.seed=3")
  assert r.returncode == 0, r.stderr[-3000:]
  npz = np.load(workdir / "samples" / "ddpm20_seed3_step30.npz")
  assert npz["images"].shape == (8, 16, 16, 1) and npz["images"].dtype == np.uint8
  assert str(npz["method"]) == "ddpm" and int(npz["checkpoint_step"]) == 30
  assert (workdir / "samples" / "ddpm20_seed3_step30.png").exists()


def test_eval_mode_writes_metrics_and_figures(trained):
  """--mode=eval on the tiny run: FID/IS/precision/recall against the real floor, the bound in
  bits/dim and denoising, merged into eval/<step>.json; a second sampler adds its entry."""
  workdir, _, _ = trained
  small = ["--mode=eval", "--config.eval.num_samples=200", "--config.eval.num_reference=1000",
           "--config.eval.bpd_num_images=16", "--config.eval.bpd_num_strata=5",
           "--config.eval.denoise_num_images=8", "--config.eval.denoise_sigmas=(0.1,0.4)",
           "--config.eval.denoise_ddim_steps=4", "--config.sampling.batch_size=200"]
  r = ddpm(workdir, *small)
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads((workdir / "eval" / "30.json").read_text())
  floor, samples = out["real_floor"], out["samples"]["ddim10_eta0_seed0"]
  assert floor["num_images"] == samples["num_images"] == 200
  # 30 steps of a tiny model draw blobs, not digits: far from the real test images.
  assert samples["fid"] > 5 * floor["fid"] > 0 and floor["precision"] > samples["precision"]
  assert 1 <= samples["inception_score"] <= 10 and 1 <= floor["inception_score"] <= 10
  assert out["bpd"]["bits_per_dim"] > 0 and out["bpd"]["standard_error"] > 0
  for sigma in ("0.1", "0.4"):
    d = out["denoise"][sigma]
    assert d["psnr_noisy"] < d["psnr_one_step"], d  # Even a tiny model removes noise.
  assert (workdir / "eval" / "30_denoise.png").exists()
  assert (workdir / "eval" / "30_ddim10_eta0_seed0.png").exists()
  assert list((workdir / "eval" / "reference").glob("mnist_train_16resize_classifier_mnist_1000.npz"))
  npz = workdir / "samples" / "ddpm20_seed3_step30.npz"
  if not npz.exists():  # Written by test_sample_mode_writes_a_grid_and_uint8_npz.
    pytest.skip("needs the sample test's npz")
  r = ddpm(workdir, "--mode=eval", "--config.eval.metrics=samples", f"--config.eval.samples_npz={npz}",
           "--config.eval.num_reference=1000", "--config.eval.num_samples=200",
           "--config.eval.is_splits=2")
  assert r.returncode != 0 and "needs at least 129 samples" in r.stderr  # Only 8 images.


@pytest.mark.parametrize("args,message", [
    (["--config.model.ch=24"], "written by a model of another shape"),
    (["--config.data.image_size=15"], "image_size=15"),
    (["--config.training.batch_size=30"], "batch_size=30"),
    (["--config.data.dataset=no_such_dataset"], "no_such_dataset"),
    (["--config.sampling.method=euler"], "sampling.method='euler'"),
    (["--mode=sample", "--config.model.num_res_blocks=2"], "another shape"),
    (["--mode=eval", "--config.eval.samples_npz=/no/such.npz"], "does not exist"),
    (["--mode=sample", "--config.sampling.guidance_weight=2"],
     "guidance_weight=2.0 needs a class-conditional model"),
    (["--config.training.trainable=^decoder_"], "'^decoder_' matches no parameter"),
    (["--num_processes=2", "--coordinator_address=127.0.0.1:1234"], "needs --process_id"),
    # Issue 17's five: a typo in an override key, a missing config file, a broken PNG among the
    # edit inputs, a samples file that is not an .npz (the offline data_dir: below).
    (["--config.training.no_such_key=3"], "config.training has no key 'no_such_key'; allowed: "),
    (["--config=configs/no_such_config.py"], "--config=configs/no_such_config.py: no such file"),
    (["--mode=denoise", "--config.edit.input={broken_png_dir}"], "broken.png is not a readable image"),
    (["--mode=eval", "--config.eval.samples_npz={not_npz}"], "not_npz.npz is not a readable .npz"),
])
def test_bad_input_stops_with_one_line_and_leaves_checkpoints_untouched(trained, tmp_path, args,
                                                                        message):
  workdir, _, _ = trained
  (tmp_path / "pngs").mkdir()
  Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "pngs" / "a_good.png")
  (tmp_path / "pngs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  (tmp_path / "not_npz.npz").write_text("images = [1, 2, 3]\n")
  args = [a.format(broken_png_dir=tmp_path / "pngs", not_npz=tmp_path / "not_npz.npz") for a in args]
  before = snapshot(workdir)
  r = ddpm(workdir, *args)
  assert r.returncode != 0
  errors = [line for line in r.stderr.splitlines() if line.startswith("ddpm: error:")]
  assert len(errors) == 1 and message in errors[0], r.stderr[-2000:]
  assert "Traceback" not in r.stderr, r.stderr[-2000:]
  assert snapshot(workdir) == before


def test_a_data_dir_that_does_not_exist_offline_stops_at_once(tmp_path):
  """Without internet (this machine and CI), a data_dir holding no MNIST is one line naming
  it, in seconds; tfds alone retries its download for minutes."""
  from ddpm.data import input_pipeline  # pylint: disable=g-import-not-at-top
  if input_pipeline.download_host_unreachable() is None:
    pytest.skip("this machine reaches the download host: tfds would download MNIST")
  t0 = time.time()
  r = ddpm(tmp_path / "run", "--config.data.data_dir=/no/such/dir")
  assert time.time() - t0 < 120
  errors = [line for line in r.stderr.splitlines() if line.startswith("ddpm: error:")]
  assert r.returncode != 0 and len(errors) == 1, r.stderr[-2000:]
  assert "data_dir='/no/such/dir', which does not exist" in errors[0] and "Traceback" not in r.stderr
  assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("override", ["--config.model.chh=24", "--config.training.batch_size=abc"])
def test_unknown_config_keys_and_wrong_types_are_rejected(tmp_path, override):
  r = ddpm(tmp_path, override)
  assert r.returncode != 0 and override.split("=")[0].split(".")[-1] in r.stderr
  assert not (tmp_path / "checkpoints").exists()


def test_bad_workdirs(tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("not a directory")
  r = ddpm(a_file)
  assert r.returncode != 0 and "is a file" in r.stderr
  empty = tmp_path / "empty"
  empty.mkdir()
  r = ddpm(empty, "--mode=sample")
  assert r.returncode != 0 and "no checkpoints/ directory" in r.stderr


def test_a_diverging_run_stops_naming_the_step_or_skips_by_policy(tmp_path):
  diverge = ["--config.optim.learning_rate=1e30", "--config.optim.warmup_steps=0",
             "--config.training.sample_every_steps=0"]
  r = ddpm(tmp_path / "stop", *diverge)
  errors = [line for line in r.stderr.splitlines() if line.startswith("ddpm: error:")]
  assert r.returncode != 0 and len(errors) == 1, r.stderr[-2000:]
  assert "non-finite loss or gradient at step" in errors[0]
  assert not list((tmp_path / "stop" / "checkpoints").glob("[0-9]*"))
  r = ddpm(tmp_path / "skip", *diverge, "--config.training.nan_policy=skip")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "Skipped the update of" in r.stderr
  state = params_at(tmp_path / "skip", 20)
  assert all(np.all(np.isfinite(v)) for v in ocp.tree.to_flat_dict(state).values()
             if np.issubdtype(np.asarray(v).dtype, np.floating))
