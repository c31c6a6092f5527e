"""The installed package is a regular package importable from anywhere (not only the repo)."""

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_ddpm_imports_outside_the_repository(tmp_path):
  code = "import ddpm, ddpm.diffusion.samplers; print(ddpm.__file__, ddpm.__version__)"
  out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split()[0] == str(REPO / "ddpm" / "__init__.py")


def test_tensorflow_is_imported_only_by_the_input_pipeline(tmp_path):
  # TensorFlow costs ~0.5 GB of RSS: sampling, editing and evaluation code must not pull it in;
  # the input pipeline's first use does (and keeps it off accelerators).
  code = ("import sys, ddpm.main, ddpm.jobs, ddpm.training, ddpm.pipelines, ddpm.evaluation\n"
          "assert 'tensorflow' not in sys.modules, 'imported TensorFlow'\n"
          "from ddpm.data import input_pipeline\n"
          "assert 'tensorflow' not in sys.modules\n"
          "input_pipeline.tf.constant(1)\n"
          "assert 'tensorflow' in sys.modules\n"
          "print(input_pipeline.tf.config.get_visible_devices('GPU'))")
  out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().splitlines()[-1] == "[]"
