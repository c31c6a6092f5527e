"""ddpm.kernels.conv: oneDNN convolutions equal lax's, values and gradients, to float32
rounding, over shapes, strides and paddings; whatever they do not cover goes to lax unchanged.

Without the built extension the oneDNN tests are skipped, unless DDPM_REQUIRE_ONEDNN=1 (CI
builds it), which makes a missing extension a failure."""

import os

import flax.linen as nn
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from jax import lax

from ddpm.kernels import conv

NHWC = ("NHWC", "HWIO", "NHWC")

if os.environ.get("DDPM_REQUIRE_ONEDNN", "") not in ("", "0"):
  assert conv.available(), conv.status()
needs_onednn = pytest.mark.skipif(not conv.available(), reason=conv.status())


def _lax(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC,
                                  precision=lax.Precision.HIGHEST)


def _ours(x, w, strides, padding):
  return conv.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)


def _loss(fn, x, w, strides, padding, cotangent):
  return jnp.sum(fn(x, w, strides, padding) * cotangent)


def _relative_error(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)


@st.composite
def convolutions(draw):
  """A float32 NHWC input, an HWIO kernel, strides, and a padding: "SAME", "VALID" or explicit
  (lo, hi) per spatial axis with 0 <= lo, hi < kernel size."""
  kh, kw = draw(st.sampled_from([(1, 1), (3, 3), (1, 3), (3, 1), (5, 5)]))
  strides = draw(st.sampled_from([(1, 1), (2, 2), (1, 2)]))
  h, w = draw(st.integers(kh, 9)), draw(st.integers(kw, 9))
  n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
  padding = draw(st.one_of(
      st.sampled_from(["SAME", "VALID"]),
      st.tuples(st.tuples(st.integers(0, kh - 1), st.integers(0, kh - 1)),
                st.tuples(st.integers(0, kw - 1), st.integers(0, kw - 1)))))
  seed = draw(st.integers(0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, h, w, c), dtype=np.float32)
  kernel = rng.standard_normal((kh, kw, c, o), dtype=np.float32)
  return x, kernel, strides, padding, rng


@needs_onednn
@settings(max_examples=40)
@given(convolutions())
def test_values_and_both_gradients_equal_lax_to_float32_rounding(case):
  x, w, strides, padding, rng = case
  y_ref = _lax(x, w, strides, padding)
  y = jax.jit(_ours, static_argnums=(2, 3))(x, w, strides, padding)
  assert y.shape == y_ref.shape and y.dtype == jnp.float32
  assert _relative_error(y, y_ref) < 1e-5
  cotangent = rng.standard_normal(y_ref.shape, dtype=np.float32)
  grads = jax.jit(jax.grad(_loss, argnums=(1, 2)), static_argnums=(0, 3, 4))
  dx, dw = grads(_ours, x, w, strides, padding, cotangent)
  dx_ref, dw_ref = grads(_lax, x, w, strides, padding, cotangent)
  assert _relative_error(dx, dx_ref) < 1e-5, "input gradient"
  assert _relative_error(dw, dw_ref) < 1e-5, "kernel gradient"


@needs_onednn
def test_the_custom_call_is_in_the_program_and_vmap_and_jvp_of_it_agree_with_lax():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((3, 2, 8, 8, 4), dtype=np.float32)  # vmapped over the first axis.
  w = rng.standard_normal((3, 3, 4, 5), dtype=np.float32)
  hlo = jax.jit(_ours, static_argnums=(2, 3)).lower(x[0], w, (1, 1), "SAME").as_text()
  assert "ddpm_onednn_conv_forward" in hlo
  ours = jax.vmap(lambda xi: _ours(xi, w, (1, 1), "SAME"))(x)
  ref = jax.vmap(lambda xi: _lax(xi, w, (1, 1), "SAME"))(x)
  assert _relative_error(ours, ref) < 1e-5
  # flax's nn.Conv passes ConvDimensionNumbers and explicit pads: still the custom call.
  layer = nn.Conv(5, (3, 3), strides=(2, 2), conv_general_dilated=conv.conv_general_dilated)
  params = layer.init(jax.random.PRNGKey(0), x[0])
  assert "ddpm_onednn_conv_forward" in jax.jit(layer.apply).lower(params, x[0]).as_text()
  reference = nn.Conv(5, (3, 3), strides=(2, 2), precision=lax.Precision.HIGHEST)
  assert _relative_error(layer.apply(params, x[0]), reference.apply(params, x[0])) < 1e-5
  # A custom_vjp defines reverse mode only: forward mode is refused, never silently wrong.
  with pytest.raises(TypeError):
    jax.jvp(lambda w_: _ours(x[0], w_, (1, 1), "SAME"), (w,), (w,))


@pytest.mark.parametrize("case", ["bfloat16", "dilation", "groups", "nchw", "negative_pad",
                                  "pad_as_large_as_the_kernel"])
def test_what_onednn_does_not_cover_goes_to_lax_with_the_same_arguments(case):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((2, 7, 7, 4), dtype=np.float32))
  w = jnp.asarray(rng.standard_normal((3, 3, 4, 4), dtype=np.float32))
  kwargs = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=NHWC)
  if case == "bfloat16":
    x, w = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
  elif case == "dilation":
    kwargs["rhs_dilation"] = (2, 2)
  elif case == "groups":
    w, kwargs["feature_group_count"] = w[:, :, :2], 2
  elif case == "nchw":
    x, w = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1)
    kwargs["dimension_numbers"] = ("NCHW", "OIHW", "NCHW")
  elif case == "negative_pad":
    kwargs["padding"] = ((-1, 1), (0, 0))
  else:
    kwargs["padding"] = ((3, 0), (1, 1))
  hlo = jax.jit(lambda a, b: conv.conv_general_dilated(a, b, **kwargs)).lower(x, w).as_text()
  assert "ddpm_onednn_conv" not in hlo and "convolution" in hlo
  np.testing.assert_array_equal(conv.conv_general_dilated(x, w, **kwargs),
                                lax.conv_general_dilated(x, w, **kwargs))


def test_the_opt_out_sends_every_convolution_to_lax_and_status_says_why(monkeypatch):
  monkeypatch.setenv(conv.OPT_OUT_ENV, "1")
  assert not conv.available() and conv.OPT_OUT_ENV in conv.status()
  x, w = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 3))
  hlo = jax.jit(lambda a, b: conv.conv_general_dilated(
      a, b, (1, 1), "SAME", dimension_numbers=NHWC)).lower(x, w).as_text()
  assert "ddpm_onednn_conv" not in hlo
  monkeypatch.setenv(conv.OPT_OUT_ENV, "0")
  assert conv.OPT_OUT_ENV not in conv.status().split("(")[0]
