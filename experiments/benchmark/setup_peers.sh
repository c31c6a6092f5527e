#!/usr/bin/env bash
# Creates experiments/benchmark/.venv with the PyTorch peers the benchmark runs beside ddpm:
# torch 2.13.0 (CPU build), diffusers and denoising_diffusion_pytorch (lucidrains).
# They are never dependencies of the ddpm package; only peers.py runs in this venv.
#
#   bash experiments/benchmark/setup_peers.sh [PYTHON]     # PYTHON defaults to python3
#
# torch is pinned to 2.13.0 by a constraints file, so no later install can replace the CPU
# wheel with a CUDA build (plain `pip install torch` or a range would pull GBs of CUDA).
#
# torchvision: there is no CPU build of it here, and denoising_diffusion_pytorch imports it
# at import time (transforms and utils, used only by its Dataset and Trainer, never by the
# Unet). So denoising_diffusion_pytorch is installed with --no-deps plus the dependencies
# its Unet and GaussianDiffusion really use, and peers.py puts a stub `torchvision` into
# sys.modules before importing it when the real one is missing (see peers.py).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${1:-python3}"
VENV="$HERE/.venv"

"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)
"${PIP[@]}" --upgrade pip

# 1. torch alone first, the CPU wheel only; fail if a CUDA build came in.
"${PIP[@]}" -c "$HERE/constraints.txt" "torch==2.13.0+cpu"
"$VENV/bin/python" - <<'EOF'
import torch
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert torch.version.cuda is None, f"a CUDA build of torch was installed: {torch.__version__}"
print("torch", torch.__version__, "(CPU build)")
EOF

# 2. The peers, pinned (requirements.txt), never upgrading torch (constraints.txt).
"${PIP[@]}" -c "$HERE/constraints.txt" -r "$HERE/requirements.txt"
# lucidrains' package without its torchvision / pytorch-fid dependencies.
"${PIP[@]}" -c "$HERE/constraints.txt" --no-deps -r "$HERE/requirements-nodeps.txt"

"$VENV/bin/python" - <<'EOF'
import sys
import importlib.metadata as md
import torch
assert torch.version.cuda is None
for name in ("torch", "diffusers", "denoising_diffusion_pytorch", "einops", "accelerate",
             "ema_pytorch"):
  print(name, md.version(name.replace("_", "-")))
EOF
echo "Peers' venv ready: $VENV"
