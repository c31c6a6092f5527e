"""--mode=inpaint, process and denoise (ddpm/jobs/) on a saved (untrained) tiny checkpoint."""

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import tiny
from ddpm.jobs import (denoise as denoise_job, editing, inpaint as inpaint_job, process as process_job)
from ddpm.runtime import checkpointing
from tiny_state import tiny_state


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir holding the tiny model's initial state as checkpoint 1, and 4 input images."""
  path = tmp_path_factory.mktemp("run")
  _, _, _, _, state, meta = tiny_state()
  manager = checkpointing.create_manager(str(path), max_to_keep=None)
  checkpointing.save(manager, 1, state.replace(step=jnp.asarray(1, jnp.int32)), meta)
  manager.wait_until_finished()
  manager.close()
  images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 1), dtype=np.uint8)
  np.savez(path / "images.npz", images=images)
  return path


def edit_config(workdir, **edit):
  c = tiny.get_config()
  c.edit.input = str(workdir / "images.npz")
  c.edit.num_images, c.edit.num_steps, c.edit.jump_length, c.edit.jump_n_sample = 4, 4, 2, 2
  c.edit.num_frames = 3
  c.sampling.num_steps = 4
  for k, v in edit.items():
    c.edit[k] = v
  return c


def test_inpaint_job_writes_the_figure_and_keeps_the_known_region(workdir):
  c = edit_config(workdir, mask="center_box")
  c.sampling.batch_size = 3  # Two batches, the second padded.
  out = inpaint_job.InpaintJob.setup(c, str(workdir)).run()
  assert out["png"].endswith("edit/inpaint_center_box_step1.png")
  with Image.open(out["png"]) as im:  # 3 rows x 4 columns of 16 px, padding 2, drawn 4x.
    assert im.size == ((4 * 18 + 2) * 4, (3 * 18 + 2) * 4)
  with np.load(out["npz"]) as f:
    assert f["inpainted"].shape == f["original"].shape == (4, 16, 16, 1)
    assert f["inpainted"].dtype == np.uint8 and f["mask"].shape == (16, 16, 1)
    assert float(f["mse_known"]) == 0.0 and float(f["mse_hole"]) > 0.0
    assert int(f["network_calls"]) == 4 + 1 * 1 * 2
    known = np.broadcast_to(f["mask"] > 0, f["original"].shape)
    np.testing.assert_array_equal(f["inpainted"][known], f["original"][known])
    assert np.all(f["masked"][~known] == 128)


def test_process_job_writes_strips_and_gifs(workdir):
  out = process_job.ProcessJob.setup(edit_config(workdir), str(workdir)).run()
  assert out["forward"].frames.shape == (3, 4, 16, 16, 1)
  np.testing.assert_array_equal(out["forward"].steps, [0, 50, 100])
  np.testing.assert_array_equal(out["reverse"].steps, [76, 26, 0])  # DDIM steps 0, 25, 50, 75.
  assert out["reverse_gif"].endswith("edit/reverse_ddim4_eta0_step1.gif")
  for key in ("forward_gif", "reverse_gif"):
    with Image.open(out[key]) as im:  # 2x2 grid of 16 px images, padding 2, drawn 4x.
      assert im.n_frames == 3 and im.size == ((2 * 18 + 2) * 4,) * 2
  for key in ("forward_png", "reverse_png"):
    with Image.open(out[key]) as im:
      assert im.size[0] >= 3 * 16 * 4 and im.size[1] >= 4 * 16 * 4


@pytest.mark.parametrize("edit,match", [
    ({"mask": "mask.png"}, r"^mask is 8x8 \(.*mask.png\), images are 16x16\.$"),
    ({"mask": "oval"}, "^config.edit.mask: mask 'oval' is unknown; allowed: center_box"),
    ({"jump_length": 0}, r"^config.edit.jump_length=0 must be an integer >= 1\.$"),
    ({"num_frames": 1}, r"^config.edit.num_frames=1 must be an integer >= 2\.$"),
    ({"num_steps": 101}, "^config.edit.num_steps=101 must be <= config.diffusion.num_timesteps"),
    ({"input": "missing.npz"}, "^config.edit.input=.*missing.npz does not exist"),
])
def test_bad_edit_values_give_one_line_errors(workdir, edit, match):
  Image.fromarray(np.full((8, 8), 255, np.uint8)).save(workdir / "mask.png")
  edit = {k: str(workdir / v) if k in ("input",) or str(v).endswith(".png") else v
          for k, v in edit.items()}
  with pytest.raises(ValueError, match=match) as e:
    inpaint_job.InpaintJob.setup(edit_config(workdir, **edit), str(workdir))
  assert "\n" not in str(e.value)


def test_image_folder_input(workdir, tmp_path):
  for i in range(3):
    Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
  c = edit_config(tmp_path)
  c.edit.input = str(tmp_path)
  np.testing.assert_array_equal(editing.load_images(c)[:, 0, 0, 0], [0, 40, 80])
  # An image of another size is fitted as the image folder dataset fits it (config.data.
  # resize_method: tiny's "resize" takes the centre crop), or named when it cannot be.
  Image.fromarray(np.full((8, 16), 200, np.uint8)).save(tmp_path / "3.png")
  c.edit.num_images = 4
  np.testing.assert_array_equal(editing.load_images(c)[:, 0, 0, 0], [0, 40, 80, 200])
  c.data.resize_method = "none"
  match = (r"^config.edit.input: .*/3.png is 16x8, not image_size=16, and "
           r"data.resize_method='none'; .*; fix or remove it\.$")
  with pytest.raises(ValueError, match=match):
    editing.load_images(c)


def test_denoise_job_adds_noise_scores_it_and_writes_the_side_by_side_figure(workdir):
  c = edit_config(workdir, noise_sigma=0.2, add_noise=True, strength=0.0)
  c.sampling.batch_size = 3  # Two batches, the second padded.
  job = denoise_job.DenoiseJob.setup(c, str(workdir))
  out = job.run()
  sched = __import__("ddpm.diffusion.schedules", fromlist=["x"]).schedule_from_config(c.diffusion)
  t_match = __import__("ddpm.diffusion.denoising", fromlist=["x"]).timestep_for_sigma(sched, 0.4)
  assert out["t0"] == t_match and out["num_steps"] == min(4, t_match + 1)
  assert out["png"].endswith("edit/denoise_sigma0.2_ddim4_eta0_step1.png")
  assert out["psnr_noisy"] < 20 and np.isfinite(out["psnr_denoised"])
  with np.load(out["npz"]) as f:
    assert f["denoised"].shape == f["noisy"].shape == f["original"].shape == (4, 16, 16, 1)
    assert f["denoised"].dtype == np.uint8
  with Image.open(out["png"]) as im:  # 3 labelled rows of 4 images.
    assert im.size[0] > 4 * 16 and im.size[1] > 3 * 16
  # Batching does not change the result: image i uses key i alone.
  c.sampling.batch_size = 4
  again = denoise_job.DenoiseJob.setup(c, str(workdir)).run()
  assert np.max(np.abs(again["denoised"].astype(int) - out["denoised"].astype(int))) <= 1


def test_sdedit_starts_at_the_strength_and_keeps_clean_inputs(workdir):
  c = edit_config(workdir, noise_sigma=0.0, add_noise=False, strength=0.5)
  out = denoise_job.DenoiseJob.setup(c, str(workdir)).run()
  assert out["t0"] == 49 and out["png"].endswith("edit/sdedit0.5_sigma0_ddim4_eta0_step1.png")
  assert "psnr_noisy" not in out  # Inputs used as they are: no originals to score against.
  with np.load(out["npz"]) as f:
    np.testing.assert_array_equal(f["noisy"], f["original"])


@pytest.mark.parametrize("edit,match", [
    ({"noise_sigma": 0.0, "strength": 0.0}, "leave nothing to do"),
    ({"noise_sigma": 0.5, "strength": 0.05}, r"strength=0.05 starts at t0=4, below the input's "
                                             r"noise level noise_sigma=0.5 \(t=\d+\); allowed"),
    ({"strength": 1.5}, r"config.edit.strength=1.5 must be in \[0, 1\]"),
    ({"noise_sigma": -1.0}, r"config.edit.noise_sigma=-1.0 must be in \[0, 10\]"),
])
def test_bad_denoise_values_give_one_line_errors(workdir, edit, match):
  with pytest.raises(ValueError, match=match) as e:
    job = denoise_job.DenoiseJob.setup(edit_config(workdir, **edit), str(workdir))
    job.run()
  assert "\n" not in str(e.value)


def test_wrong_image_shapes_and_ranges_are_one_line_errors(workdir, tmp_path):
  for name, images, match in [
      ("rgb.npz", np.zeros((2, 16, 16, 3), np.uint8), "16, 16, 1"),
      ("big.npz", np.zeros((2, 28, 28, 1), np.uint8), "16, 16, 1"),
      ("range.npz", np.full((2, 16, 16, 1), 3.0, np.float32), "range")]:
    np.savez(tmp_path / name, images=images)
    c = edit_config(workdir)
    c.edit.input = str(tmp_path / name)
    with pytest.raises(ValueError, match=match) as e:
      editing.load_images(c)
    assert "\n" not in str(e.value)
