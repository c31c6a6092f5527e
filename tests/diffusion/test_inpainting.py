"""RePaint (ddpm/diffusion/inpainting.py): exact for single-point data, jump schedule, masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddpm.diffusion import inpainting, parameterization, schedules

SCHEDULE = schedules.make_schedule("linear", 50, scale_to_1000=True)
T = SCHEDULE.num_timesteps
SHAPE = (2, 8, 8, 1)


def data(seed=0, shape=SHAPE):
  x = np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
  x.flat[0], x.flat[1] = -1.0, 1.0  # The clipping edges.
  return jnp.asarray(x)


def eps_oracle(x0):
  """The exact eps predictor when the data is the single point x0."""
  return lambda xt, t: parameterization.eps_from_x0(SCHEDULE, xt, t, x0)


@pytest.mark.parametrize("mask_name,num_steps,j,r", [
    ("center_box", None, 10, 3),  # Full chain, T = 50.
    ("random_pixels:0.7", 20, 3, 2),
    ("every_other_line", 12, 1, 4),  # j = 1: Alg. 1's one-step resampling.
    ("bottom_half", 9, 20, 5),  # j >= S: no jumps.
    ("top_half", 7, 2, 1),  # r = 1: no resampling.
])
def test_oracle_denoiser_recovers_the_single_data_point_everywhere(mask_name, num_steps, j, r):
  """With x0_hat = x0 at every step the hole's last step returns x0_hat (alpha_bar_{-1} = 1:
  coef_x0 = 1, coef_xt = 0, no noise) and the known region is x0 by construction."""
  x0 = data(1)
  mask = inpainting.make_mask(mask_name, SHAPE[1:])
  fn = jax.jit(lambda x, m, k: inpainting.repaint(eps_oracle(x), SCHEDULE, x, m, k,
                                                  num_steps=num_steps, jump_length=j,
                                                  jump_n_sample=r))
  out = np.asarray(fn(x0, mask, jax.random.PRNGKey(0)).samples)
  np.testing.assert_allclose(out, x0, atol=2e-6)
  np.testing.assert_array_equal(out[np.broadcast_to(mask > 0, SHAPE)],
                                np.asarray(x0)[np.broadcast_to(mask > 0, SHAPE)])


def test_x0_oracle_is_exact_bitwise_and_trajectory_follows_the_walk():
  x0 = data(2)
  mask = inpainting.make_mask("left_half", SHAPE[1:])
  calls = []

  def model(xt, t):  # Records the time step of every network call actually made.
    jax.debug.callback(lambda t: calls.append(int(t[0])), t)
    return x0

  out = inpainting.repaint(model, SCHEDULE, x0, mask, jax.random.PRNGKey(3), num_steps=10,
                           jump_length=3, jump_n_sample=2, prediction_type="x0",
                           return_trajectory=True)
  jax.effects_barrier()
  np.testing.assert_array_equal(out.samples, x0)
  path = inpainting.repaint_timesteps(T, 10, 3, 2)
  # S + J (r - 1) j with jump points 0, 3, 6: J = 3.
  assert len(calls) == inpainting.num_network_calls(10, 3, 2) == 10 + 3 * 1 * 3
  assert sorted(calls) == sorted(path[:-1][np.diff(path) < 0].tolist())  # At each down move's t.
  assert out.trajectory.shape == (len(path),) + SHAPE
  np.testing.assert_array_equal(out.trajectory[-1], out.samples)


@pytest.mark.parametrize("S,j,r", [(1, 1, 1), (5, 2, 2), (10, 10, 5), (10, 1, 3), (50, 10, 10),
                                   (250, 10, 10), (37, 4, 3), (20, 7, 1)])
def test_jump_schedule(S, j, r):
  ts = inpainting.jump_schedule(S, j, r)
  assert ts[0] == S - 1 and ts[-1] == -1
  assert np.all(np.abs(np.diff(ts)) == 1)
  assert set(ts.tolist()) == set(range(-1, S))
  assert ts.min() == -1 and ts.max() == S - 1
  downs = int(np.sum(np.diff(ts) < 0))
  assert downs == inpainting.num_network_calls(S, j, r) == S + max(0, -(-S // j) - 1) * (r - 1) * j
  assert len(ts) - 1 == downs + (downs - S)  # Every up move is undone by one extra down move.
  if r == 1 or j >= S:
    np.testing.assert_array_equal(ts, np.arange(S - 1, -2, -1))


def test_jump_schedule_matches_the_papers_example_and_respacing():
  np.testing.assert_array_equal(inpainting.jump_schedule(5, 2, 2),
                                [4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1])
  assert inpainting.num_network_calls(250, 10, 10) == 2410  # RePaint's CelebA/ImageNet setting.
  path = inpainting.repaint_timesteps(T, 10, 3, 2)  # Uniform respacing: 0, 5, ..., 45.
  assert path[0] == 45 and path[-2:].tolist() == [0, -1]
  assert np.all(np.abs(np.diff(path[:-1])) == 5)  # Moves between neighbouring respaced steps.
  np.testing.assert_array_equal(inpainting.repaint_timesteps(T, None, 1, 1),
                                np.arange(T - 1, -2, -1))
  with pytest.raises(ValueError, match="jump_length=0"):
    inpainting.jump_schedule(10, 0, 2)
  with pytest.raises(ValueError, match="jump_n_sample=1.5"):
    inpainting.num_network_calls(10, 2, 1.5)


def test_known_region_is_exact_for_any_model_and_hole_is_filled():
  """The last move pastes x^known = sqrt(1) x_known + sqrt(0) eps: with a binary mask the known
  pixels of the result are x_known bit for bit, whatever the model predicts; the hole is not."""
  x0 = data(4)
  model = lambda xt, t: jnp.tanh(0.7 * xt) + 0.01 * t[:, None, None, None]
  for name in ("center_box", "random_pixels:0.5"):
    mask = inpainting.make_mask(name, SHAPE[1:])
    known = np.broadcast_to(mask > 0, SHAPE)
    out = np.asarray(inpainting.repaint(model, SCHEDULE, x0, mask, jax.random.PRNGKey(5),
                                        num_steps=10, jump_length=2, jump_n_sample=2).samples)
    assert np.mean((out[known] - np.asarray(x0)[known]) ** 2) == 0.0
    assert np.mean((out[~known] - np.asarray(x0)[~known]) ** 2) > 1e-3
    assert np.all(np.abs(out) <= 1.0)


def test_per_example_keys_and_batched_mask():
  x0 = data(6)
  keys = jax.random.split(jax.random.PRNGKey(7), 2)
  masks = np.stack([inpainting.make_mask("top_half", SHAPE[1:]),
                    inpainting.make_mask("left_half", SHAPE[1:])])
  model = lambda xt, t: 0.5 * xt
  run = lambda x, m, k: np.asarray(inpainting.repaint(model, SCHEDULE, x, m, k, num_steps=6,
                                                      jump_length=2, jump_n_sample=2).samples)
  both = run(x0, masks, keys)
  np.testing.assert_array_equal(both[1:], run(x0[1:], masks[1:], keys[1:]))  # Example i: key i.
  x0 = np.asarray(x0)
  assert np.all(both[0, 4:] == x0[0, 4:]) and np.all(both[1, :, 4:] == x0[1, :, 4:])
  with pytest.raises(ValueError, match=r"mask shape \(8, 4, 1\) does not broadcast"):
    inpainting.repaint(model, SCHEDULE, x0, np.ones((8, 4, 1)), keys, num_steps=4)
  with pytest.raises(ValueError, match="variance 'big'"):
    inpainting.repaint(model, SCHEDULE, x0, masks, keys, num_steps=4, variance="big")


@pytest.mark.parametrize("name,known", [
    ("center_box", 0.75), ("bottom_half", 0.5), ("top_half", 0.5), ("left_half", 0.5),
    ("every_other_line", 0.5), ("random_pixels:0.25", 0.75), ("random_pixels:0", 1.0),
    ("random_pixels:1", 0.0)])
def test_builtin_masks(name, known):
  m = inpainting.make_mask(name, (8, 12, 3))
  assert m.shape == (8, 12, 1) and m.dtype == np.float32 and set(np.unique(m)) <= {0.0, 1.0}
  assert m.mean() == pytest.approx(known)
  assert inpainting.make_mask(name, (8, 12)).tolist() == m.tolist()  # Seeded.


def test_builtin_mask_geometry():
  box = inpainting.make_mask("center_box", (28, 28))[..., 0]
  assert box[7:21, 7:21].sum() == 0 and box.sum() == 28 * 28 - 14 * 14
  bottom = inpainting.make_mask("bottom_half", (4, 4))[..., 0]
  assert bottom.tolist() == [[1] * 4] * 2 + [[0] * 4] * 2
  assert inpainting.make_mask("every_other_line", (4, 2))[..., 0].tolist() == [[1, 1], [0, 0]] * 2
  assert inpainting.make_mask("left_half", (2, 4))[..., 0].tolist() == [[0, 0, 1, 1]] * 2
  a, b = (inpainting.make_mask("random_pixels:0.5", (8, 8), seed=s) for s in (0, 1))
  assert a.sum() == b.sum() == 32 and not np.array_equal(a, b)


@pytest.mark.parametrize("name,match", [
    ("circle", "mask 'circle' is unknown; allowed: center_box"),
    ("random_pixels:1.5", "fraction '1.5'"),
    ("random_pixels:x", "fraction 'x'"),
])
def test_bad_mask_names_give_one_line_errors(name, match):
  with pytest.raises(ValueError, match=match) as e:
    inpainting.make_mask(name, (8, 8))
  assert "\n" not in str(e.value)


def test_resampling_moves_the_hole_towards_the_true_conditional():
  """Two-pixel Gaussian data x0 ~ N(0, Sigma), var 0.25, correlation 0.9, with the exact
  E[x0 | x_t] = sqrt(ab) Sigma (ab Sigma + (1 - ab) I)^-1 x_t as model; pixel 0 known = 0.5.
  p(x_1 | x_0 = 0.5) = N(0.45, 0.0475). Without resampling the hole lags (mean ~0.30); with
  r = 10 it is pulled towards the known pixel (~0.38): RePaint's harmonization, Sec. 4.2."""
  var, rho = 0.25, 0.9
  sigma = jnp.asarray([[var, rho * var], [rho * var, var]])

  def model(xt, t):
    ab = SCHEDULE.alpha_bars[t][:, None, None]
    a = jnp.sqrt(ab) * sigma[None] @ jnp.linalg.inv(ab * sigma[None] + (1 - ab) * jnp.eye(2))
    return jnp.einsum("bij,bj->bi", a, xt[:, 0, :, 0])[:, None, :, None]

  x_known = jnp.zeros((2000, 1, 2, 1)).at[:, 0, 0, 0].set(0.5)
  mask = np.asarray([[[1.0], [0.0]]], np.float32)
  err = {}
  for r in (1, 10):
    out = np.asarray(inpainting.repaint(model, SCHEDULE, x_known, mask, jax.random.PRNGKey(0),
                                        jump_length=5, jump_n_sample=r, prediction_type="x0",
                                        clip_x0=False).samples)
    assert np.all(out[:, 0, 0, 0] == 0.5)
    hole = out[:, 0, 1, 0]
    err[r] = (abs(hole.mean() - rho * 0.5), abs(hole.var() - var * (1 - rho**2)))
  assert err[10][0] < 0.6 * err[1][0] and err[10][1] < err[1][1], err
