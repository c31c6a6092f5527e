#!/bin/bash
# Every number and figure of experiments/conditional/README.md, from the trained model:
#   python3 -m ddpm.main --config=configs/mnist_conditional.py --workdir=$WORKDIR
#   experiments/conditional/run_experiments.sh $WORKDIR $RUNS
# WORKDIR: the class-conditional MNIST run; RUNS: a scratch folder for the fine-tuning runs.
# Figures and small result files are copied into experiments/conditional/.
set -euo pipefail
WORKDIR=${1:?usage: $0 WORKDIR RUNS}
RUNS=${2:?usage: $0 WORKDIR RUNS}
OUT=$(cd "$(dirname "$0")" && pwd)
cd "$OUT/../.."
export TFDS_DATA_DIR=${TFDS_DATA_DIR:-$PWD/../shared/data/tensorflow_datasets}
STEP=$(ls "$WORKDIR/checkpoints" | grep -E '^[0-9]+$' | sort -n | tail -1)
run() { python3 -m ddpm.main --config=configs/mnist_conditional.py --workdir="$WORKDIR" "$@"; }
fast="--config.sampling.method=dpm_solver_pp_2m --config.sampling.num_steps=20 --config.sampling.spacing=quadratic"

# 1. Guidance: accuracy of the requested class, FID/IS/precision/recall per weight.
python3 experiments/conditional/guidance_sweep.py --workdir="$WORKDIR" --out="$OUT" --num=500 --weights=-1,0,0.5,1,2,4

# 2. Samples: one row per class (3 each), guided (w = 1), DDPM with all 1000 steps.
run --mode=sample --config.sampling.method=ddpm --config.sampling.num_steps=1000 \
    --config.sampling.guidance_weight=1 --config.sampling.num_samples=30 --config.sampling.batch_size=30
cp "$WORKDIR/samples/ddpm1000_w1_seed0_step$STEP.png" "$OUT/samples_ddpm1000_w1.png"

# 3. Denoising (test images plus noise of std 0.2 and 0.4 on [0, 1]) and SDEdit.
for sigma in 0.2 0.4; do
  run --mode=denoise --config.edit.noise_sigma=$sigma --config.edit.num_images=10 \
      --config.sampling.method=ddpm --config.sampling.num_steps=1000
  name=$(ls -t "$WORKDIR/edit/" | grep "^denoise_sigma${sigma}_ddpm.*_step$STEP.png" | head -1)
  cp "$WORKDIR/edit/$name" "$OUT/denoise_sigma$sigma.png"
  cp "$WORKDIR/edit/${name%.png}.npz" "$OUT/denoise_sigma$sigma.npz"
done
run --mode=denoise --config.edit.noise_sigma=0 --config.edit.add_noise=False \
    --config.edit.strength=0.6 --config.edit.num_images=10 --config.sampling.class_label=8 \
    --config.sampling.guidance_weight=2 $fast
cp "$WORKDIR/edit/$(ls -t "$WORKDIR/edit/" | grep "^sdedit0.6_sigma0_.*_class8_step$STEP.png" | head -1)" "$OUT/sdedit_to_8.png"

# 4. Inpainting (RePaint, 250 steps, j = r = 10) of two masks.
for mask in center_box bottom_half; do
  run --mode=inpaint --config.edit.mask=$mask --config.edit.num_images=10 \
      --config.sampling.batch_size=10
  cp "$WORKDIR/edit/inpaint_${mask}_step$STEP.png" "$OUT/inpaint_$mask.png"
  python3 experiments/conditional/inpaint_baselines.py "$WORKDIR/edit/inpaint_${mask}_step$STEP.npz" \
      > "$OUT/inpaint_$mask.json"
done

# 5. Pictures of the process: forward strip, reverse strip and GIF (DDPM, 1000 steps).
run --mode=process --config.edit.num_images=4 --config.sampling.method=ddpm \
    --config.sampling.num_steps=1000 --config.sampling.class_label=3 --config.sampling.guidance_weight=1
cp "$WORKDIR/edit/forward_step$STEP.png" "$OUT/process_forward.png"
cp "$WORKDIR/edit/reverse_ddpm1000_w1_class3_step$STEP.png" "$OUT/process_reverse.png"
cp "$WORKDIR/edit/reverse_ddpm1000_w1_class3_step$STEP.gif" "$OUT/process_reverse.gif"

# 6. Synthetic data (100 per class, guided w = 1) and the augmentation experiment.
[ -d "$WORKDIR/synthetic/tfds/mnist_synthetic" ] || \
  run --mode=synthesize --config.synthesize.num_per_class=100 --config.sampling.guidance_weight=1 \
      --config.sampling.batch_size=250 $fast
cp "$WORKDIR/synthetic/mnist_synthetic.png" "$OUT/synthetic.png"
python3 experiments/conditional/augmentation.py --synthetic="$WORKDIR/synthetic/mnist_synthetic.npz" --out="$OUT" \
    --sizes=10,100 --seeds=0,1 --steps=400

# 7. Anomaly scores: MNIST test (normal) vs. Fashion-MNIST test (anomalous).
run --mode=anomaly --config.anomaly.anomalous=fashion_mnist --config.anomaly.num_images=500
cp "$WORKDIR/anomaly/${STEP}_fashion_mnist.json" "$OUT/anomaly.json"
cp "$WORKDIR/anomaly/${STEP}_fashion_mnist.png" "$OUT/anomaly.png"

# 8. Fine-tuning on Fashion-MNIST: from scratch, all parameters, decoder only.
python3 experiments/conditional/finetune_fashion.py --source="$WORKDIR" --runs="$RUNS" --out="$OUT" --steps=300 --num=500
