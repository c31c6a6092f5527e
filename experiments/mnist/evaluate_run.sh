#!/bin/bash
# Issue 3's numbers for the MNIST run: samples per sampler, then FID/IS/precision/recall of each,
# the bound in bits/dim and denoising. Usage: experiments/mnist/evaluate_run.sh WORKDIR
# (WORKDIR from `python -m ddpm.main --config=configs/mnist.py --workdir=WORKDIR`).
set -euo pipefail
WORKDIR=${1:?usage: $0 WORKDIR}
N=${N:-1000}
run() { python3 -m ddpm.main --config=configs/mnist.py --workdir="$WORKDIR" "$@"; }
for spec in "ddim 10 uniform" "ddim 20 uniform" "ddim 50 uniform" "ddim 100 uniform" \
            "ddpm 1000 uniform" "ddim 10 quadratic" "ddim 20 quadratic" \
            "dpm_solver_pp_2m 10 quadratic" "dpm_solver_pp_2m 20 quadratic" \
            "heun 10 quadratic" "heun 20 quadratic"; do
  set -- $spec
  npz="$WORKDIR/samples/${1}${2}$([ "$1" = ddim ] && echo _eta0)$([ "$3" = uniform ] || echo _$3)_seed0_step3500.npz"
  [ -f "$npz" ] || run --mode=sample --config.sampling.method=$1 --config.sampling.num_steps=$2 \
      --config.sampling.spacing=$3 --config.sampling.num_samples=$N --config.sampling.batch_size=200
  run --mode=eval --config.eval.metrics=samples --config.eval.samples_npz="$npz" \
      --config.eval.num_samples=$N
done
run --mode=eval --config.eval.metrics=bpd,denoise
