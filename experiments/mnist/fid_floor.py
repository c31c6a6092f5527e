r"""The floor of the MNIST metrics: real test images against the train split, at several sizes.

FID is biased upwards for small sample sets; this measures the floor for 1000 and all 10,000
test images and its spread over 10 disjoint 1000-image subsets, with the same classifier
features and cached reference statistics that `--mode=eval` uses.

  TFDS_DATA_DIR=../shared/data/tensorflow_datasets \
    python experiments/mnist/fid_floor.py --workdir=/work/runs/mnist --out=experiments/mnist/fid_floor.json
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import numpy as np  # noqa: E402

from configs import mnist  # noqa: E402
from ddpm.data import input_pipeline  # noqa: E402
from ddpm.evaluation import features, metrics, sample_quality as quality  # noqa: E402


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", required=True)
  p.add_argument("--out", required=True)
  args = p.parse_args()
  c = mnist.get_config()
  ex = features.classifier_extractor("mnist")
  ref = quality.reference_statistics(c, ex, "train", os.path.join(args.workdir, "eval", "reference"))
  test, _ = input_pipeline.load_split_uint8(c, "test")
  out = {f"test_{n}": quality.sample_quality(ex, test[:n], ref) for n in (1000, 10000)}
  feats = ex(test).features
  stats = metrics.GaussianStats(ref["mu"], ref["sigma"], int(ref["num"]))
  fids = [metrics.frechet_distance(metrics.gaussian_stats(feats[i * 1000:(i + 1) * 1000]), stats)
          for i in range(10)]
  out["fid_1000_disjoint_subsets"] = dict(fids=fids, mean=float(np.mean(fids)),
                                          std=float(np.std(fids, ddof=1)))
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)
  print(json.dumps({k: (v["fid"] if "fid" in v else v["mean"]) for k, v in out.items()}))


if __name__ == "__main__":
  main()
