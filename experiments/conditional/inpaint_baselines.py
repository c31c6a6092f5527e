"""The hole MSE of an --mode=inpaint result next to two trivial fills, as JSON on stdout.

  python experiments/conditional/inpaint_baselines.py WORKDIR/edit/inpaint_center_box_stepN.npz

Fills: black (the MNIST background) and the mean MNIST training image. All MSEs on the [0, 1]
scale against the originals; the known-region MSE is 0 by construction (RePaint's last move
puts the known pixels back exactly), reported to show it is.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import numpy as np  # noqa: E402

from ddpm.training import classifier_fit  # noqa: E402


def main(path):
  f = np.load(path)
  original = f["original"].astype(np.float64) / 255.0
  known = np.broadcast_to(f["mask"] > 0.5, original.shape)
  x_train, _ = classifier_fit._load("mnist", "train", None)  # pylint: disable=protected-access
  fills = {"repaint": f["inpainted"].astype(np.float64) / 255.0,
           "black": np.zeros_like(original),
           "mean_train_image": np.broadcast_to(x_train.astype(np.float64).mean(0) / 255.0,
                                               original.shape)}
  out = {f"mse_hole_{k}": float(np.mean((v - original)[~known] ** 2)) for k, v in fills.items()}
  out.update(mse_known=float(f["mse_known"]), hole_fraction=float(1.0 - known.mean()),
             network_calls=int(f["network_calls"]), seconds=float(f["seconds"]),
             num_images=len(original))
  print(json.dumps(out))


if __name__ == "__main__":
  main(sys.argv[1])
