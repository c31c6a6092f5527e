"""A user's image files (ddpm/data/image_files.py): PNG masks."""

import numpy as np
import pytest
from PIL import Image

from ddpm.data import image_files


def test_mask_from_image(tmp_path):
  pic = np.zeros((8, 6), np.uint8)
  pic[:, 3:] = 255
  pic[0, 0] = 1  # Nonzero = known.
  Image.fromarray(pic).save(tmp_path / "m.png")
  m = image_files.mask_from_image(str(tmp_path / "m.png"), (8, 6, 1))
  assert m.shape == (8, 6, 1) and m.sum() == 8 * 3 + 1
  np.testing.assert_array_equal(image_files.mask_from_image(np.stack([pic] * 3, -1), (8, 6)), m)
  with pytest.raises(ValueError, match=r"^mask is 8x6 \(.*m.png\), images are 16x16\.$") as e:
    image_files.mask_from_image(str(tmp_path / "m.png"), (16, 16, 1))
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match=r"^mask is 8x6, images are 6x8\.$"):
    image_files.mask_from_image(pic, (6, 8))
  with pytest.raises(ValueError, match="does not exist"):
    image_files.mask_from_image(str(tmp_path / "nope.png"), (8, 6))
