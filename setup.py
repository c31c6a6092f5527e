"""The optional compiled extension `ddpm.kernels._onednn_conv` (oneDNN convolutions for
XLA:CPU, ddpm/kernels/onednn_conv.cc); everything else is in pyproject.toml.

It is built at `pip install` when a C++17 compiler and oneDNN's headers and library are found
(Debian/Ubuntu: apt install libdnnl-dev; elsewhere set DNNL_ROOT to oneDNN's prefix). Without
them the install goes on and the U-Net uses lax convolutions. DDPM_BUILD_ONEDNN=0 skips the
build, =1 makes a failed build an error (CI), unset or "auto" tries it.
"""

import os
import pathlib
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = pathlib.Path(__file__).parent
MODE = os.environ.get("DDPM_BUILD_ONEDNN", "auto").strip().lower() or "auto"
if MODE not in ("0", "1", "auto"):
  sys.exit(f"DDPM_BUILD_ONEDNN={MODE!r}: allowed are 0 (skip), 1 (required), auto (default)")


def _onednn_prefixes():
  root = os.environ.get("DNNL_ROOT")
  return [pathlib.Path(root)] if root else [pathlib.Path(sys.prefix), pathlib.Path("/usr"),
                                            pathlib.Path("/usr/local")]


def _find_onednn():
  """(include dir, library dirs) of the first prefix with oneapi/dnnl/dnnl.hpp, or None."""
  for prefix in _onednn_prefixes():
    if (prefix / "include" / "oneapi" / "dnnl" / "dnnl.hpp").is_file():
      libs = [str(d) for d in (prefix / "lib", prefix / "lib64",
                               *sorted((prefix / "lib").glob("*-linux-gnu"))) if d.is_dir()]
      return str(prefix / "include"), libs
  return None


class OptionalBuildExt(build_ext):
  """Builds the extension when it can; a failure is one line unless DDPM_BUILD_ONEDNN=1."""

  def run(self):
    try:
      super().run()
    except Exception as e:  # pylint: disable=broad-except
      self._skip(e)

  def build_extension(self, ext):
    try:
      super().build_extension(ext)
    except Exception as e:  # pylint: disable=broad-except
      self._skip(e)

  def _skip(self, error):
    if MODE == "1":
      raise error
    print(f"ddpm: the oneDNN convolution extension was not built ({error}); convolutions use "
          "lax", file=sys.stderr)


def _extensions():
  if MODE == "0" or not sys.platform.startswith("linux"):
    return []
  found = _find_onednn()
  if found is None:
    if MODE == "1":
      sys.exit("DDPM_BUILD_ONEDNN=1 but no oneapi/dnnl/dnnl.hpp under "
               f"{[str(p) for p in _onednn_prefixes()]}: apt install libdnnl-dev or set "
               "DNNL_ROOT")
    print("ddpm: oneDNN not found (apt install libdnnl-dev, or DNNL_ROOT); the convolution "
          "extension is not built, convolutions use lax", file=sys.stderr)
    return []
  include, lib_dirs = found
  return [Extension(
      "ddpm.kernels._onednn_conv", sources=["ddpm/kernels/onednn_conv.cc"],
      include_dirs=[include], library_dirs=lib_dirs,
      runtime_library_dirs=lib_dirs, libraries=["dnnl"], language="c++",
      # The vendored XLA FFI headers (jaxlib's, header-only) as system headers: no warnings.
      extra_compile_args=["-std=c++17", "-O3", "-isystem", "ddpm/kernels/xla_ffi"])]


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
