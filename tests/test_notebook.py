"""experiments/colab_tpu.ipynb runs top to bottom in smoke mode, on 8 forced CPU devices.

The notebook's kernel is a subprocess with its own XLA_FLAGS (8 host devices, as a v2-8 has 8
cores); parameters are injected after the cell tagged `parameters`, as papermill does, so the
run installs nothing and mounts no Drive.
"""

import os
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "experiments" / "colab_tpu.ipynb"
pytestmark = pytest.mark.skipif(
    not (pathlib.Path(os.environ.get("TFDS_DATA_DIR", "/nonexistent")) / "mnist").is_dir(),
    reason="needs the prepared MNIST in TFDS_DATA_DIR")


def _text(cell) -> str:
  out = []
  for o in cell.get("outputs", []):
    out.append(o.get("text", "") if o["output_type"] == "stream"
               else o.get("data", {}).get("text/plain", ""))
  return "".join(out)


def test_the_colab_notebook_runs_in_smoke_mode_on_eight_devices(tmp_path):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  params = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
  assert len(params) == 1, "exactly one cell tagged `parameters`"
  workdir = tmp_path / "workdir"
  nb.cells.insert(params[0] + 1, nbformat.v4.new_code_cell(
      f"SMOKE = True\nINSTALL = False\nUSE_DRIVE = False\nWORKDIR = {str(workdir)!r}",
      metadata={"tags": ["injected-parameters"]}))
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=(
      "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 "
      "--xla_llvm_disable_expensive_passes=true"))  # Cheapest code generation: compiles fast.
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(REPO)}})
  client.execute(env=env)  # Raises CellExecutionError, naming the cell, if any cell fails.

  by_source = lambda needle: next(c for c in nb.cells if needle in c.source)
  assert "device_count: 8" in _text(by_source("jax.devices()"))
  assert "trained to step 4" in _text(by_source('setup_job("train", config, WORKDIR)'))
  assert "resumed and trained to step 6" in _text(by_source("TRAIN_STEPS + MORE_STEPS"))
  shown = lambda needle: sum("image/png" in o.get("data", {})
                             for o in by_source(needle).outputs)
  assert shown("plt.show()") == 1  # The loss curve.
  assert shown("step_*.png") == 2  # The grids of steps 2 and 4.
  assert shown('setup_job("sample"') == 1  # The DDIM samples.
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["4", "6"]
  assert (workdir / "samples" / "ddim5_eta0_seed0_step4.npz").is_file()
  log = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                if o.get("name") == "stderr")
  assert "8 devices" in log and "from step 4" in log  # pmap over 8; the resume.
