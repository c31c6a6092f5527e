"""Images out: the uint8 mapping inverts the input scaling, grids put each image in its cell."""

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from ddpm.data import image_arrays
from ddpm.visualization import grids

uint8_images = hnp.arrays(np.uint8, hnp.array_shapes(min_dims=4, max_dims=4, min_side=1, max_side=6))


@given(uint8_images)
def test_to_uint8_inverts_the_input_scaling(u):
  x = u.astype(np.float32) / 127.5 - 1.0  # What the input pipeline feeds the model.
  np.testing.assert_array_equal(image_arrays.to_uint8(x), u)


@given(hnp.arrays(np.float32, (5,), elements=st.floats(-100, 100, width=32)))
def test_to_uint8_clips_to_the_valid_range(x):
  out = image_arrays.to_uint8(x)
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out[x <= -1], 0)
  np.testing.assert_array_equal(out[x >= 1], 255)


@given(uint8_images, st.integers(1, 5), st.integers(0, 3))
def test_grid_cells_hold_the_images_in_row_major_order(images, ncols, pad):
  n, h, w, c = images.shape
  grid = grids.make_grid(images, ncols=ncols, padding=pad)
  rows = -(-n // ncols)
  assert grid.shape == (rows * (h + pad) + pad, ncols * (w + pad) + pad, c)
  for i in range(n):
    r, col = divmod(i, ncols)
    y, x = pad + r * (h + pad), pad + col * (w + pad)
    np.testing.assert_array_equal(grid[y:y + h, x:x + w], images[i])


def test_bad_images_raise():
  with pytest.raises(ValueError, match="non-finite"):
    image_arrays.to_uint8(np.array([0.0, np.nan]))
  with pytest.raises(ValueError, match="uint8 images"):
    grids.make_grid(np.zeros((2, 4, 4, 1), np.float32))
