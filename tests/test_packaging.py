"""The installed package is a regular package importable from anywhere (not only the repo)."""

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_ddpm_imports_outside_the_repository(tmp_path):
  code = "import ddpm, ddpm.samplers; print(ddpm.__file__, ddpm.__version__)"
  out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split()[0] == str(REPO / "ddpm" / "__init__.py")
