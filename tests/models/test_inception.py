"""The FID Inception-v3: weight loading from torch-layout .npz, shapes, grey input, clear errors.

Numerical parity with pytorch-fid itself needs torch: experiments/inception/parity.py.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddpm.evaluation import features
from ddpm.models import inception


def _random_state(seed: int = 0) -> dict[str, np.ndarray]:
  """pytorch-fid state_dict names, torch layouts (conv OIHW, fc [out, in]), random values."""
  rng = np.random.default_rng(seed)
  state = {}
  for name, shape in inception.torch_state_shapes().items():
    if name.endswith("conv.weight") or name == "fc.weight":  # He scale keeps activations O(1).
      state[name] = rng.normal(0, np.sqrt(2 / np.prod(shape[1:])), shape)
    elif name.endswith("running_var"):
      state[name] = rng.uniform(0.5, 2.0, shape)
    elif name.endswith("bn.weight"):
      state[name] = rng.uniform(0.5, 1.5, shape)
    else:
      state[name] = rng.normal(0, 0.2, shape)
  state["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.array(7)  # In real files; ignored.
  return {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in state.items()}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  state = _random_state()
  path = str(tmp_path_factory.mktemp("inception") / "fid_inception.npz")
  np.savez(path, **state)
  return state, path


@pytest.fixture(scope="module")
def outputs(weights):
  """One extractor, each input shape compiled once: float inputs and a uint8 batch."""
  extractor = features.inception_extractor(weights[1], batch_size=2)
  apply = functools.partial(jax.jit(extractor.apply), extractor.variables)
  rng = np.random.default_rng(1)
  gray = rng.uniform(-1, 1, (2, 28, 28, 1)).astype(np.float32)
  rgb = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  u8 = rng.integers(0, 256, (3, 28, 28, 1)).astype(np.uint8)  # 3 > batch 2: padded last batch.
  return dict(gray=apply(gray), gray3=apply(np.repeat(gray, 3, -1)), rgb=apply(rgb),
              rgb_swapped=apply(rgb[::-1]), u8=extractor(u8), extractor=extractor)


def test_table_is_pytorch_fids_state_dict():
  shapes = inception.torch_state_shapes()
  assert len(shapes) == 472  # torchvision's 566 FID-Inception entries less 94 num_batches_tracked.
  assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
  assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)  # (1, 7): kH=1, kW=7.
  assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
  assert shapes["Mixed_5b.branch1x1.bn.running_mean"] == (64,)
  assert shapes["fc.weight"] == (1008, 2048) and shapes["fc.bias"] == (1008,)
  assert not any("AuxLogits" in k for k in shapes)


def test_loader_transposes_torch_layout(weights):
  state, path = weights
  v = inception.load_fid_inception_variables(path)
  assert set(v) == {"params", "batch_stats"}
  p = v["params"]
  for mod in (("Conv2d_1a_3x3",), ("Mixed_6b", "branch7x7_2"), ("Mixed_7c", "branch3x3_2b")):
    name = ".".join(mod)
    leaf = p
    for m in mod:
      leaf = leaf[m]
    np.testing.assert_array_equal(leaf["conv"]["kernel"],
                                  state[f"{name}.conv.weight"].transpose(2, 3, 1, 0))  # OIHW->HWIO
    np.testing.assert_array_equal(leaf["bn"]["scale"], state[f"{name}.bn.weight"])
  np.testing.assert_array_equal(v["batch_stats"]["Mixed_5b"]["branch1x1"]["bn"]["var"],
                                state["Mixed_5b.branch1x1.bn.running_var"])
  np.testing.assert_array_equal(p["fc"]["kernel"], state["fc.weight"].T)
  np.testing.assert_array_equal(p["fc"]["bias"], state["fc.bias"])


def test_shapes_finite_and_input_dependent(outputs):
  for key in ("gray", "rgb"):
    feats, logits = outputs[key]
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008)
    assert np.all(np.isfinite(feats)) and np.all(np.isfinite(logits))
    assert np.all(feats >= 0)  # Mean of relus.
    assert float(jnp.max(jnp.abs(feats[0] - feats[1]))) > 1e-4
  # Examples don't interact (BatchNorm runs on stored statistics).
  np.testing.assert_allclose(outputs["rgb_swapped"][0], outputs["rgb"][0][::-1],
                             rtol=1e-5, atol=1e-6)


def test_one_channel_equals_repeated_grey(outputs):
  # The same function of the input up to the first convolution's summation order: the two
  # differ by float32 rounding, which ~95 layers grow to ~1e-6 of logits of size ~1 (seen: 1.3e-6
  # on an AVX2 machine), hence the same 1e-5 tolerance as the batch-order test above.
  for a, b in zip(outputs["gray"], outputs["gray3"]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_feature_extractor_interface(outputs):
  ext, f = outputs["extractor"], outputs["u8"]
  assert ext.name == "inception_v3_fid" and ext.feature_dim == 2048 and ext.image_shape is None
  assert f.features.shape == (3, 2048) and f.probs.shape == (3, 1008)
  assert f.features.dtype == np.float64
  np.testing.assert_allclose(f.probs.sum(1), 1.0, rtol=1e-5)


def test_resize_matches_torch_bilinear_hand_computed():
  """torch F.interpolate(bilinear, align_corners=False), 2 -> 4 pixels: [a, .75a+.25b, .25a+.75b, b]
  (half-pixel centres, edges repeated); 4 -> 2 averages pairs (no antialias: a 2-tap filter)."""
  x = jnp.array([0.0, 1.0]).reshape(1, 1, 2, 1)
  np.testing.assert_allclose(inception.resize_bilinear(x, (1, 4))[0, 0, :, 0],
                             [0.0, 0.25, 0.75, 1.0], atol=1e-7)
  x = jnp.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).reshape(1, 1, 6, 1)
  # 6 -> 2: sample points 1 and 4 (scale 3), exactly pixels 1 and 4 (antialiasing would blur).
  np.testing.assert_allclose(inception.resize_bilinear(x, (1, 2))[0, 0, :, 0], [1.0, 4.0],
                             atol=1e-6)


def _one_line_error(path, match):
  with pytest.raises(ValueError, match=match) as e:
    inception.load_fid_inception_variables(path)
  assert "\n" not in str(e.value)
  return str(e.value)


def test_missing_file_says_where_to_get_weights(tmp_path):
  msg = _one_line_error(str(tmp_path / "nope.npz"), "not found")
  assert inception.WEIGHTS_URL in msg and "convert_pt_inception.py" in msg
  for path in ("", None):
    with pytest.raises(ValueError, match="no FID Inception weights given") as e:
      features.inception_extractor(path)
    assert "\n" not in str(e.value) and inception.WEIGHTS_URL in str(e.value)


def test_bad_files_give_one_line_errors(weights, tmp_path):
  state, _ = weights

  def write(name, **changes):
    s = {k: v for k, v in state.items() if changes.get(k, 0) is not None}
    s.update({k: v for k, v in changes.items() if v is not None})
    path = str(tmp_path / name)
    np.savez(path, **s)
    return path

  _one_line_error(write("missing.npz", **{"Mixed_6e.branch_pool.bn.running_var": None}),
                  r"missing weight 'Mixed_6e\.branch_pool\.bn\.running_var' "
                  r"\(expected shape \(192,\)\)")
  w = state["Conv2d_2a_3x3.conv.weight"].transpose(2, 3, 1, 0)  # Already HWIO: wrong layout.
  _one_line_error(write("hwio.npz", **{"Conv2d_2a_3x3.conv.weight": w}),
                  r"'Conv2d_2a_3x3\.conv\.weight' has shape \(3, 3, 32, 32\), expected "
                  r"\(32, 32, 3, 3\)")
  _one_line_error(write("fc1000.npz", **{"fc.weight": np.zeros((1000, 2048), np.float32)}),
                  r"'fc\.weight' has shape \(1000, 2048\), expected \(1008, 2048\)")
  _one_line_error(write("aux.npz", **{"AuxLogits.fc.bias": np.zeros(1000, np.float32)}),
                  "unexpected weight.*AuxLogits")
  garbage = tmp_path / "weights.pth"
  garbage.write_bytes(b"\x80\x02not an npz")
  _one_line_error(str(garbage), "cannot read .* as .npz.*convert_pt_inception")
