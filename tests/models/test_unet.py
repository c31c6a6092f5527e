"""The U-Net: shapes, time dependence, initialization and clear errors for bad sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from ddpm.models.unet import UNet, timestep_embedding

TINY = dict(ch=8, num_res_blocks=1, dropout=0.0, num_groups=4)


@given(st.lists(st.floats(0, 1000), min_size=1, max_size=5), st.sampled_from([4, 8, 32, 128]))
def test_time_embedding_is_unit_circles(ts, dim):
  """Each (sin, cos) pair lies on the unit circle, so ||e(t)||^2 = dim / 2 for every t."""
  e = timestep_embedding(jnp.asarray(ts), dim)
  assert e.shape == (len(ts), dim)
  np.testing.assert_allclose(jnp.sum(e**2, axis=-1), dim / 2, rtol=1e-5)
  np.testing.assert_allclose(timestep_embedding(jnp.zeros(1), dim)[0, : dim // 2], 0.0)


def _perturbed(params, seed=0):
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree_util.tree_unflatten(
      tree, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


@pytest.mark.parametrize("size,ch_mult,attn", [(28, (1, 2, 2), (7,)), (32, (1, 2, 2, 2), (16, 8))])
def test_output_shape_zero_init_and_time_dependence(size, ch_mult, attn):
  model = UNet(ch_mult=ch_mult, attn_resolutions=attn, **TINY)
  # Jitted: one compile per shape instead of hundreds of op-by-op dispatches (CI time).
  init, apply = jax.jit(model.init), jax.jit(model.apply)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size, 1))
  t = jnp.array([3, 700])
  params = init(jax.random.PRNGKey(1), x, t)
  out = apply(params, x, t)
  assert out.shape == x.shape and out.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(out))) == 0.0  # Zero-initialized output convolution.
  params = _perturbed(params)
  a = apply(params, x, jnp.array([3, 3]))
  b = apply(params, x, jnp.array([700, 700]))
  assert np.all(np.isfinite(a)) and float(jnp.mean(jnp.abs(a - b))) > 1e-3
  # Examples do not interact (GroupNorm, not BatchNorm): another example 1 leaves example 0's
  # output as it was (the same shape, so no second compile).
  other = x.at[1].set(jax.random.normal(jax.random.PRNGKey(5), x.shape[1:]) * 3 + 1)
  np.testing.assert_allclose(apply(params, other, t)[0], apply(params, x, t)[0],
                             rtol=1e-4, atol=1e-5)
  assert float(jnp.max(jnp.abs(apply(params, other, t)[1] - apply(params, x, t)[1]))) > 1e-3


def test_dropout_is_active_only_in_training():
  model = UNet(ch_mult=(1, 2), attn_resolutions=(), **{**TINY, "dropout": 0.5})
  x, t = jnp.ones((1, 8, 8, 1)), jnp.array([10])
  params = _perturbed(jax.jit(model.init)(jax.random.PRNGKey(0), x, t))
  apply = jax.jit(model.apply, static_argnames="train")  # Two compiles, not op-by-op dispatch.
  np.testing.assert_array_equal(apply(params, x, t), apply(params, x, t))
  r = lambda k: apply(params, x, t, train=True, rngs={"dropout": jax.random.PRNGKey(k)})
  assert not np.allclose(r(0), r(1))


@pytest.mark.parametrize("kwargs,shape,match", [
    (dict(ch_mult=(1, 2, 2, 2), attn_resolutions=()), (1, 28, 28, 1), "image_size=28 .*multiples of 8"),
    (dict(ch_mult=(1, 2), attn_resolutions=(5,)), (1, 16, 16, 1), r"attn_resolutions=\(5,\)"),
    (dict(ch_mult=(1, 2), attn_resolutions=(), num_groups=3), (1, 16, 16, 1), "num_groups=3"),
    (dict(ch_mult=(1, 2), attn_resolutions=()), (1, 16, 8, 1), "square"),
])
def test_bad_sizes_give_one_line_errors(kwargs, shape, match):
  model = UNet(**{**TINY, **kwargs})
  with pytest.raises(ValueError, match=match) as e:
    model.init(jax.random.PRNGKey(0), jnp.zeros(shape), jnp.zeros((1,), jnp.int32))
  assert "\n" not in str(e.value)
