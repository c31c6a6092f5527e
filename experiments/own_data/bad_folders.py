"""Every bad image folder tried for issue 16, run through the command line: what a user sees.

  python experiments/own_data/bad_folders.py --out=experiments/own_data/bad_folders.json

Each case builds its folder in a temporary directory, runs `python -m ddpm.main --config=folder
...` and records the exit code, the `ddpm: error:` line (or, for cases that are a logged line
and not an error, that line), whether a traceback was printed and whether anything was written
under the workdir's checkpoints/. Cases that would go on to train stop right after their logged
line because the batch is set larger than the folder (the next error), so no case compiles.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_shapes  # noqa: E402  pylint: disable=wrong-import-position


def shapes(root, n=12, classes=make_shapes.CLASSES, sizes=make_shapes.SIZES):
  rng = np.random.default_rng(0)
  for i in range(n):
    kind = classes[i % len(classes)] if classes else ""
    im = make_shapes.picture(rng, kind or "circles", sizes[i % len(sizes)])
    os.makedirs(os.path.join(root, kind), exist_ok=True)
    im.save(os.path.join(root, kind, f"{i:03d}.png"))
  return root


def case_empty(d):
  os.makedirs(f"{d}/f/sub")
  open(f"{d}/f/notes.txt", "w").write("no images here")
  return [f"--config.data.data_dir={d}/f"]


def case_missing(d):
  return [f"--config.data.data_dir={d}/no_such_folder"]


def case_no_data_dir(d):
  return []


def case_truncated(d):
  shapes(f"{d}/f")
  path = f"{d}/f/circles/000.png"
  data = open(path, "rb").read()
  open(path, "wb").write(data[:len(data) // 2])
  return [f"--config.data.data_dir={d}/f"]


def case_truncated_skip(d):
  return case_truncated(d) + ["--config.data.bad_images=skip",
                              "--config.training.batch_size=4096"]


def case_not_an_image(d):
  shapes(f"{d}/f")
  open(f"{d}/f/squares/readme.jpg", "w").write("this is text, not a JPEG")
  return [f"--config.data.data_dir={d}/f"]


def case_mixed_sizes_none(d):
  shapes(f"{d}/f")
  return [f"--config.data.data_dir={d}/f", "--config.data.resize_method=none"]


def case_larger_than_pad(d):
  shapes(f"{d}/f")
  return [f"--config.data.data_dir={d}/f", "--config.data.resize_method=pad"]


def case_fewer_than_a_batch(d):
  shapes(f"{d}/f", n=20)
  return [f"--config.data.data_dir={d}/f"]


def case_subfolders_unconditional(d):
  shapes(f"{d}/f")
  return [f"--config.data.data_dir={d}/f", "--config.training.batch_size=4096"]


def case_class_count(d):
  shapes(f"{d}/f")
  return [f"--config.data.data_dir={d}/f", "--config.model.num_classes=5"]


def case_loose_images(d):
  shapes(f"{d}/f")
  Image.new("RGB", (40, 40)).save(f"{d}/f/loose.png")
  return [f"--config.data.data_dir={d}/f", "--config.model.num_classes=3"]


def case_flat_folder_conditional(d):
  shapes(f"{d}/f", classes=())
  return [f"--config.data.data_dir={d}/f", "--config.model.num_classes=3"]


def case_bad_split(d):
  shapes(f"{d}/f")
  return [f"--config.data.data_dir={d}/f", "--config.data.split=test"]


def case_bad_policy(d):
  shapes(f"{d}/f")
  return [f"--config.data.data_dir={d}/f", "--config.data.bad_images=maybe"]


def case_rgb_fid_without_weights(d):
  shapes(f"{d}/f")
  return [f"--config.data.data_dir={d}/f", "--mode=eval"]


CASES = [
    ("empty folder (only a .txt and an empty subfolder)", case_empty),
    ("data_dir does not exist", case_missing),
    ("image_folder without data_dir", case_no_data_dir),
    ("truncated PNG (bad_images=stop, the default)", case_truncated),
    ("truncated PNG with bad_images=skip", case_truncated_skip),
    ("text file named .jpg", case_not_an_image),
    ("mixed sizes with resize_method=none", case_mixed_sizes_none),
    ("images larger than image_size with resize_method=pad", case_larger_than_pad),
    ("fewer images than one batch (18 of the 20 train, batch 64)", case_fewer_than_a_batch),
    ("class subfolders, unconditional model", case_subfolders_unconditional),
    ("3 class subfolders, model.num_classes=5", case_class_count),
    ("an image beside the class subfolders, conditional model", case_loose_images),
    ("no subfolders, conditional model", case_flat_folder_conditional),
    ("data.split=test (a folder has only train)", case_bad_split),
    ("data.bad_images=maybe", case_bad_policy),
    ("--mode=eval on RGB without FID Inception weights", case_rgb_fid_without_weights),
]


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--out", default="")
  args = p.parse_args()
  rows = []
  for name, make in CASES:
    with tempfile.TemporaryDirectory() as d:
      extra = make(d)
      workdir = f"{d}/workdir"
      cmd = [sys.executable, "-m", "ddpm.main", "--config=folder", f"--workdir={workdir}", *extra]
      t = time.time()
      r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
      errors = [line for line in r.stderr.splitlines() if line.startswith("ddpm: error:")]
      logged = [re.sub(r"^\S+ \S+ +\d+ \S+\] ", "", line) for line in r.stderr.splitlines()
                if ("Image folder" in line) and ("skipped" in line or "subfolders" in line)]
      ckpt = os.path.join(workdir, "checkpoints")
      rows.append({"case": name, "args": [a.replace(d, "$TMP") for a in extra],
                   "exit_code": r.returncode,
                   "error": errors[-1].replace(d, "$TMP") if errors else None,
                   "logged": [x.replace(d, "$TMP") for x in logged],
                   "traceback": "Traceback" in r.stderr,
                   "checkpoints_written": os.path.isdir(ckpt) and bool(os.listdir(ckpt)),
                   "seconds": round(time.time() - t, 1)})
      print(json.dumps(rows[-1]), flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  main()
