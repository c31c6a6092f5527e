"""Pictures of the process (ddpm/visualization/process_figures.py): the forward strip's
statistics, files."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ddpm.diffusion import schedules
from ddpm.visualization import process_figures

SCHEDULE = schedules.make_schedule("linear", 50, scale_to_1000=True)
T = SCHEDULE.num_timesteps


def test_forward_strip_is_q_sample_with_one_shared_noise():
  """Unit-variance data x0 = +-1: x_t = a x0 + s eps with a^2 + s^2 = 1, so std(x_t) = 1 and
  corr(x_t, x0) = a = sqrt(alpha_bar_t) at every frame (Ho et al. 2020, eq. 4)."""
  x0 = jnp.asarray(np.random.default_rng(0).choice([-1.0, 1.0], (2, 32, 32, 1)), jnp.float32)
  strip = process_figures.forward_strip(SCHEDULE, x0, jax.random.PRNGKey(1), 6)
  assert strip.frames.shape == (6, 2, 32, 32, 1)
  np.testing.assert_array_equal(strip.steps, [0, 10, 20, 30, 40, 50])
  np.testing.assert_array_equal(strip.frames[0], x0)
  ab = np.append(1.0, np.asarray(SCHEDULE.alpha_bars, np.float64))[strip.steps]
  for frame, a2 in zip(strip.frames, ab):
    corr = np.corrcoef(frame.ravel(), np.asarray(x0).ravel())[0, 1]
    assert corr == pytest.approx(np.sqrt(a2), abs=0.07), (corr, np.sqrt(a2))
  assert strip.frames[-1].std() == pytest.approx(1.0, abs=0.05)
  assert abs(np.corrcoef(strip.frames[-1].ravel(), np.asarray(x0).ravel())[0, 1]) < 0.07
  # One shared eps: (x_t - a x0) / s is the same array in every frame.
  eps = [(f - np.sqrt(a2) * np.asarray(x0)) / np.sqrt(1 - a2)
         for f, a2 in zip(strip.frames[1:], ab[1:])]
  for e in eps[1:]:
    np.testing.assert_allclose(e, eps[0], atol=2e-3)


def test_reverse_trajectory_frames_and_steps():
  out = process_figures.reverse_trajectory("ddim", lambda x, t: 0.3 * x, SCHEDULE,
                                           jax.random.PRNGKey(0), (2, 4, 4, 1), 4, num_steps=10)
  assert out.frames.shape == (4, 2, 4, 4, 1)
  np.testing.assert_array_equal(out.steps, [46, 31, 11, 0])  # Uniform respacing 0, 5, .., 45.
  np.testing.assert_array_equal(process_figures.trajectory_steps(T, 4, timesteps=[0, 9, 30]),
                                [31, 10, 1, 0])


def test_strip_and_gif_files(tmp_path):
  rng = np.random.default_rng(0)
  frames = rng.uniform(-1.2, 1.2, (5, 3, 7, 7, 1)).astype(np.float32)  # Out of range: clipped.
  png = process_figures.save_strip(str(tmp_path / "s.png"), frames, [0, 10, 20, 30, 50], title="q")
  with Image.open(png) as im:
    assert im.size[0] >= 5 * 7 * 9 and im.size[1] >= 3 * 7 * 9  # 64 // 7 = 9 times larger.
  gif = process_figures.save_gif(str(tmp_path / "a" / "g.gif"), frames, 100, scale=4, ncols=3)
  with Image.open(gif) as im:
    assert im.n_frames == 5 and im.info["loop"] == 0
    assert im.size == ((3 * (7 + 2) + 2) * 4, (7 + 2 + 2) * 4)  # One row of 3, padding 2.
    im.seek(4)
    assert im.info["duration"] == 100
  rgb = rng.integers(0, 256, (2, 4, 6, 6, 3), dtype=np.uint8)
  with Image.open(process_figures.save_gif(str(tmp_path / "c.gif"), rgb, [50, 400], scale=1)) as im:
    assert im.n_frames == 2 and im.size == (2 * 8 + 2, 2 * 8 + 2)  # 2x2 grid.


def test_bad_arguments_give_one_line_errors():
  x0 = jnp.zeros((1, 4, 4, 1))
  for n in (0, 1, T + 2, 2.5, True):
    match = rf"num_frames={n!r} must be an integer in \[2, {T + 1}\]"
    with pytest.raises(ValueError, match=match) as e:
      process_figures.forward_strip(SCHEDULE, x0, jax.random.PRNGKey(0), n)
    assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match=r"num_frames=12 must be an integer in \[2, 11\]"):
    process_figures.reverse_trajectory("ddim", lambda x, t: x, SCHEDULE, jax.random.PRNGKey(0),
                                       (1, 4, 4, 1), 12, num_steps=10)
  frames = np.zeros((3, 1, 4, 4, 1), np.float32)
  with pytest.raises(ValueError, match="2 labels for 3 frames"):
    process_figures.save_strip("/tmp/unused.png", frames, [0, 1])
  with pytest.raises(ValueError, match=r"frames must be \[F, B, H, W, C\]"):
    process_figures.save_gif("/tmp/unused.gif", frames[0])
  with pytest.raises(ValueError, match="duration_ms"):
    process_figures.save_gif("/tmp/unused.gif", frames, [10, 10])
