"""A folder of images of my own making for experiments/own_data: coloured shapes.

  python experiments/own_data/make_shapes.py --out=/tmp/shapes --num=3000

Three classes in subfolders (circles/, squares/, triangles/), each picture one filled shape of a
random colour, size and position on a plain background of another random colour, with a soft
shadow; sizes mixed (48x48, 64x48, 40x56, 96x96) and formats mixed (PNG, JPEG, WebP), so the
image folder's decoding, resizing and centre crop all run. Deterministic in --seed.
"""

import argparse
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZES = ((48, 48), (64, 48), (40, 56), (96, 96))
FORMATS = ("png", "jpg", "webp")
CLASSES = ("circles", "squares", "triangles")


def picture(rng, kind: str, size) -> Image.Image:
  w, h = size
  background = tuple(int(v) for v in rng.integers(0, 256, 3))
  fill = tuple(int(v) for v in rng.integers(0, 256, 3))
  im = Image.new("RGB", (w, h), background)
  r = int(rng.integers(min(w, h) // 6, min(w, h) // 3 + 1))
  # Keep the shape inside the centre square, which the crop to a square keeps.
  s = min(w, h)
  x0, y0 = (w - s) // 2, (h - s) // 2
  cx, cy = x0 + int(rng.integers(r, s - r + 1)), y0 + int(rng.integers(r, s - r + 1))
  shadow = Image.new("L", (w, h), 0)
  box = (cx - r, cy - r, cx + r, cy + r)
  points = [(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)]
  for layer, colour in ((shadow, 120), (im, fill)):
    d = ImageDraw.Draw(layer)
    off = (3, 3) if layer is shadow else (0, 0)
    b = (box[0] + off[0], box[1] + off[1], box[2] + off[0], box[3] + off[1])
    if kind == "circles":
      d.ellipse(b, fill=colour)
    elif kind == "squares":
      d.rectangle(b, fill=colour)
    else:
      d.polygon([(x + off[0], y + off[1]) for x, y in points], fill=colour)
    if layer is shadow:
      shadow = shadow.filter(ImageFilter.GaussianBlur(2))
      im.paste((0, 0, 0), mask=shadow.point(lambda v: v // 2))
  return im


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--out", required=True)
  p.add_argument("--num", type=int, default=3000)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  rng = np.random.default_rng(args.seed)
  for i in range(args.num):
    kind = CLASSES[i % len(CLASSES)]
    im = picture(rng, kind, SIZES[i % len(SIZES)])
    folder = os.path.join(args.out, kind)
    os.makedirs(folder, exist_ok=True)
    im.save(os.path.join(folder, f"{i:05d}.{FORMATS[i % len(FORMATS)]}"), quality=95)
  print(f"wrote {args.num} images to {args.out}")


if __name__ == "__main__":
  main()
