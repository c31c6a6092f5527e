"""2-D convolutions on oneDNN for XLA:CPU: a drop-in for `jax.lax.conv_general_dilated`.

XLA:CPU runs the U-Net's 3x3 NHWC convolutions at ~100-150 GFLOP/s on an AVX-512 CPU (its
own emitter, or YNNPACK), oneDNN's direct convolutions at ~200-270 (experiments/benchmark/
ONEDNN.md). `conv_general_dilated` sends a float32 NHWC x HWIO -> NHWC convolution with unit
dilation and one group to the compiled extension `ddpm.kernels._onednn_conv` (onednn_conv.cc)
through the XLA FFI, with the exact gradients as a `jax.custom_vjp`:

  y  = conv(x, w)                                  (forward)
  dx = conv_transpose(dy, w)   = d<y, dy>/dx       (oneDNN backward data)
  dw = sum_n x_patches^T dy    = d<y, dy>/dw       (oneDNN backward weights)

Everything else goes to `lax.conv_general_dilated` with the same arguments, so the results
agree to float32 rounding either way: a default backend other than the CPU (GPU, TPU: their
code path is unchanged), the extension not built or not loadable, other dtypes, layouts,
dilations or groups, a padding that is negative or not smaller than the kernel (oneDNN 2.x's
backward data is wrong there), and the opt-outs DDPM_NO_ONEDNN=1 or DDPM_NO_XLA_CPU_FLAGS=1
(every CPU-specific lever off). Under `vmap` the custom call runs once per batch element.

The extension is optional: `pip install` builds it when a C++ compiler and oneDNN's headers
are there (setup.py; Debian/Ubuntu: apt install libdnnl-dev), and `status()` says which path
convolutions take and why.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import os
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ddpm.runtime import xla_flags

OPT_OUT_ENV = "DDPM_NO_ONEDNN"
_NHWC = ("NHWC", "HWIO", "NHWC")
_TARGETS = {"forward": "DdpmOnednnConvForward", "backward_data": "DdpmOnednnConvBackwardData",
            "backward_weights": "DdpmOnednnConvBackwardWeights"}


def library_path() -> pathlib.Path | None:
  """The built extension's file beside this module, or None when it was not built."""
  here = pathlib.Path(__file__).parent
  for suffix in importlib.machinery.EXTENSION_SUFFIXES:
    path = here / f"_onednn_conv{suffix}"
    if path.is_file():
      return path
  return None


@functools.lru_cache(maxsize=None)
def _load() -> tuple[str | None, str]:
  """Loads the extension and registers its handlers with XLA once: (version, "") or (None,
  why not)."""
  path = library_path()
  if path is None:
    return None, "the extension ddpm.kernels._onednn_conv was not built (see setup.py)"
  try:
    library = ctypes.CDLL(str(path))
  except OSError as e:
    return None, f"cannot load {path.name}: {e}"
  for name, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(f"ddpm_onednn_conv_{name}",
                                jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
  v = library.DdpmOnednnVersion()
  return f"{v // 10000}.{v // 100 % 100}.{v % 100}", ""


def status() -> str:
  """One line: whether convolutions run on oneDNN in this process, and if not, why."""
  environ = os.environ
  if xla_flags.is_set(environ, OPT_OUT_ENV):
    return f"lax (XLA) convolutions: {OPT_OUT_ENV} is set"
  if xla_flags.is_set(environ, xla_flags.OPT_OUT_ENV):
    return f"lax (XLA) convolutions: {xla_flags.OPT_OUT_ENV} is set"
  if jax.default_backend() != "cpu":
    return f"lax (XLA) convolutions: the default backend is {jax.default_backend()}"
  version, why_not = _load()
  if version is None:
    return f"lax (XLA) convolutions: {why_not}"
  return f"oneDNN {version} convolutions (float32 NHWC; {OPT_OUT_ENV}=1 turns them off)"


def available() -> bool:
  """Whether float32 NHWC convolutions run on oneDNN in this process (see `status`)."""
  return status().startswith("oneDNN")


def _explicit_padding(padding, in_spatial, kernel_spatial, strides):
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(in_spatial, kernel_spatial, strides, padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _is_nhwc(lhs, rhs, dimension_numbers) -> bool:
  """Whether `dimension_numbers` (strings, as in lax's docs, or the ConvDimensionNumbers flax
  passes) say NHWC input, HWIO kernel, NHWC output."""
  if dimension_numbers is None or lhs.ndim != 4 or rhs.ndim != 4:
    return False
  try:
    numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  except (TypeError, ValueError):
    return False
  return numbers == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)


def _is_unit(dilation) -> bool:
  return dilation is None or all(int(d) == 1 for d in dilation)


def _covered(lhs, rhs, strides, pads, lhs_dilation, rhs_dilation, feature_group_count,
             batch_group_count, preferred_element_type) -> bool:
  """Whether this NHWC convolution is one the oneDNN handlers compute (module docstring)."""
  if lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32:
    return False
  if preferred_element_type not in (None, jnp.float32):
    return False
  if not (_is_unit(lhs_dilation) and _is_unit(rhs_dilation)):
    return False
  if feature_group_count != 1 or batch_group_count != 1 or len(strides) != 2:
    return False
  kernel = rhs.shape[:2]
  return all(0 <= p < k for (lo, hi), k in zip(pads, kernel) for p in (lo, hi))


def _ffi(name, result_shape, *operands, strides, pads):
  call = jax.ffi.ffi_call(f"ddpm_onednn_conv_{name}",
                          jax.ShapeDtypeStruct(result_shape, jnp.float32),
                          vmap_method="sequential")
  return call(*operands, strides=np.asarray(strides, np.int64),
              padding=np.asarray([p for pair in pads for p in pair], np.int64))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def onednn_conv2d(x: jax.Array, w: jax.Array, strides: tuple[int, int],
                  pads: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """y[n,i,j,o] = sum_{a,b,c} x[n, s_h i + a - p_top, s_w j + b - p_left, c] w[a,b,c,o] on
  oneDNN: float32 x NHWC, w HWIO, y NHWC, 0 <= each pad < its kernel size."""
  n, h, wd, _ = x.shape
  kh, kw, _, o = w.shape
  oh = (h + pads[0][0] + pads[0][1] - kh) // strides[0] + 1
  ow = (wd + pads[1][0] + pads[1][1] - kw) // strides[1] + 1
  return _ffi("forward", (n, oh, ow, o), x, w, strides=strides, pads=pads)


def _forward(x, w, strides, pads):
  return onednn_conv2d(x, w, strides, pads), (x, w)


def _backward(strides, pads, residuals, dy):
  x, w = residuals
  dx = _ffi("backward_data", x.shape, dy, w, strides=strides, pads=pads)
  dw = _ffi("backward_weights", w.shape, x, dy, strides=strides, pads=pads)
  return dx, dw


onednn_conv2d.defvjp(_forward, _backward)


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`, on oneDNN where it covers the call (module docstring)."""
  lax_conv = functools.partial(
      lax.conv_general_dilated, lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count, batch_group_count=batch_group_count,
      precision=precision, preferred_element_type=preferred_element_type)
  if not _is_nhwc(lhs, rhs, dimension_numbers) or not available():
    return lax_conv()
  strides = tuple(int(s) for s in window_strides)
  pads = _explicit_padding(padding, lhs.shape[1:3], rhs.shape[:2], strides)
  if not _covered(lhs, rhs, strides, pads, lhs_dilation, rhs_dilation, feature_group_count,
                  batch_group_count, preferred_element_type):
    return lax_conv()
  return onednn_conv2d(lhs, rhs, strides, pads)
