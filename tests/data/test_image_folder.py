"""A folder of images as a dataset: listing, labels, splits, decoding and fitting, the tf.data
stream (shapes, epochs, exact resume, per-process slices), and every bad folder's one line."""

import itertools
import json
import logging as std_logging
import os

import hypothesis.strategies as st
import jax
import numpy as np
import pytest
from hypothesis import given
from PIL import Image

from configs import tiny
from ddpm.data import image_folder, input_pipeline


def _save(path, array, fmt=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.asarray(array, np.uint8)).save(path, format=fmt)


def make_folder(root, n=40, classes=("cat", "dog"), size=(20, 24), rgb=True, seed=0):
  """n images spread over class subfolders (or loose if classes is empty), mixed formats and
  sizes: image i is filled with the value 5 i + 3 (so it can be recognised after decoding)."""
  rng = np.random.default_rng(seed)
  exts = ("png", "jpg", "webp", "bmp")
  for i in range(n):
    h, w = size if i % 3 else (size[1] + 8, size[0])  # Mixed sizes and orientations.
    value = (5 * i + 3) % 256
    shape = (h, w, 3) if rgb else (h, w)
    a = np.full(shape, value, np.uint8)
    if rgb:
      a[..., 1] = rng.integers(0, 255)
    sub = classes[i % len(classes)] if classes else ""
    ext = exts[i % len(exts)] if i % 5 else "png"
    kw = {"quality": 100} if ext in ("jpg", "webp") else {}
    p = os.path.join(root, sub, f"img{i:03d}.{ext}")
    os.makedirs(os.path.dirname(p), exist_ok=True)
    Image.fromarray(a).save(p, **kw)
  return root


def folder_config(root, **data):
  c = tiny.get_config()
  c.data.dataset = "image_folder"
  c.data.data_dir = str(root)
  c.data.channels = 3
  c.data.resize_method = "resize"
  c.data.shuffle_buffer_size = 1000
  c.training.batch_size = 8
  c.data.update(data)
  return c


def test_listing_is_sorted_recursive_and_skips_hidden_and_other_files(tmp_path):
  for rel in ("b/2.png", "a/1.JPG", "a/sub/3.webp", "0.bmp", ".hidden.png", ".git/x.png",
              "notes.txt", "a/readme.md"):
    p = tmp_path / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"")
  assert image_folder.list_image_files(str(tmp_path)) == [
      "0.bmp", os.path.join("a", "1.JPG"), os.path.join("a", "sub", "3.webp"),
      os.path.join("b", "2.png")]


@given(w=st.integers(1, 300), h=st.integers(1, 300), size=st.sampled_from([8, 16, 32]))
def test_resize_gives_the_square_and_keeps_a_constant_image_constant(w, h, size):
  im = Image.new("RGB", (w, h), (200, 10, 77))
  out = image_folder.fit(im, size, "resize")
  assert out.size == (size, size)
  np.testing.assert_array_equal(np.asarray(out), np.broadcast_to([200, 10, 77], (size, size, 3)))


@given(w=st.integers(1, 16), h=st.integers(1, 16), seed=st.integers(0, 100))
def test_pad_puts_the_image_unchanged_in_the_centre_of_black(w, h, seed):
  a = np.random.default_rng(seed).integers(1, 256, (h, w), dtype=np.uint8)
  out = np.asarray(image_folder.fit(Image.fromarray(a), 16, "pad"))
  top, left = (16 - h) // 2, (16 - w) // 2
  np.testing.assert_array_equal(out[top:top + h, left:left + w], a)
  assert out.sum() == a.astype(np.int64).sum()  # Nothing else but black.


def test_resize_crops_the_centre_of_the_longer_side():
  # A 16x48 image whose middle third is white: resized to 16 on the shorter side, the centre
  # crop is exactly that third.
  a = np.zeros((16, 48), np.uint8)
  a[:, 16:32] = 255
  out = np.asarray(image_folder.fit(Image.fromarray(a), 16, "resize"))
  np.testing.assert_array_equal(out, np.full((16, 16), 255))


@given(n=st.integers(1, 500), count=st.integers(1, 7), cut=st.integers(0, 100))
def test_split_slices_and_process_slices_partition_the_folder(n, count, cut):
  import tensorflow_datasets as tfds
  folder = image_folder.ImageFolder("/x", tuple(f"{i}.png" for i in range(n)),
                                    np.zeros(n, np.int32), (), (), 3, 8, "resize")
  np.testing.assert_array_equal(folder.indices("train"), np.arange(n))
  head, tail = folder.indices(f"train[:{cut}%]"), folder.indices(f"train[{cut}%:]")
  np.testing.assert_array_equal(np.concatenate([head, tail]), np.arange(n))
  # Each process's slice (tfds.split_for_jax_process) is contiguous; together: the split.
  parts = [folder.indices(tfds.split_for_jax_process("train", process_index=p,
                                                     process_count=count)) for p in range(count)]
  np.testing.assert_array_equal(np.concatenate(parts), np.arange(n))


def test_an_unknown_split_name_says_what_a_folder_has():
  folder = image_folder.ImageFolder("/x", ("a.png",), np.zeros(1, np.int32), (), (), 3, 8, "none")
  with pytest.raises(ValueError, match=r"one split, 'train' \(1 images\); allowed: 'train' or a "
                     r"slice") as e:
    folder.indices("test")
  assert "\n" not in str(e.value)


def test_stream_shapes_labels_epochs_and_exact_resume(tmp_path):
  root = make_folder(str(tmp_path / "imgs"), n=40)
  c = folder_config(root)
  c.model.num_classes = 2
  it = input_pipeline.create_train_iterator(c, 0)
  batches = list(itertools.islice(it, 11))  # 88 examples: 2 epochs and a part.
  n = jax.local_device_count()
  b = batches[0]
  assert b["image"].shape == (n, 8 // n, 16, 16, 3) and b["image"].dtype == np.float32
  assert b["image"].min() >= -1 and b["image"].max() <= 1
  index = np.concatenate([x["index"].ravel() for x in batches])
  labels = np.concatenate([x["label"].ravel() for x in batches])
  assert sorted(index[:40]) == sorted(index[40:80]) == list(range(40))
  assert not np.array_equal(index[:40], index[40:80])  # Reshuffled each epoch.
  # Labels are the sorted subfolders: image i is in classes[i % 2] (cat = 0, dog = 1); the
  # examples are the files in example order.
  files = input_pipeline.get_builder(c.data, 2).files
  assert list(files) == image_folder.example_order(image_folder.list_image_files(root))
  expect = np.asarray([0 if f.startswith("cat") else 1 for f in files])
  np.testing.assert_array_equal(labels, expect[index])
  # Red channel = 5 i + 3 of the original image (JPEG/WebP at quality 100: within a few levels).
  red = (np.concatenate([x["image"][..., 0].reshape(-1, 256) for x in batches])[:, 0] + 1) * 127.5
  original = np.asarray([int(f.split("img")[1][:3]) for f in files])[index] * 5 + 3
  assert np.abs(red - original).max() <= 4
  # A run resumed at step 6 reads exactly the batches a run from 0 read there.
  resumed = list(itertools.islice(input_pipeline.create_train_iterator(c, 6), 5))
  for x, y in zip(batches[6:], resumed):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["index"], y["index"])


def test_grey_folder_and_load_split_uint8_of_a_slice(tmp_path):
  root = make_folder(str(tmp_path / "g"), n=10, classes=(), rgb=False)
  c = folder_config(root, channels=1)
  images, labels = input_pipeline.load_split_uint8(c, "train[8:]")
  assert images.shape == (2, 16, 16, 1) and images.dtype == np.uint8
  last_two = [int(f[3:6]) for f in input_pipeline.get_builder(c.data).files[8:]]
  np.testing.assert_array_equal(images[:, 0, 0, 0], [5 * i + 3 for i in last_two])
  np.testing.assert_array_equal(labels, [0, 0])


def _one_line_error(match, fn, *args):
  with pytest.raises(ValueError, match=match) as e:
    fn(*args)
  assert "\n" not in str(e.value), str(e.value)
  return str(e.value)


def test_bad_folders_are_one_line_errors(tmp_path):
  open_folder = image_folder.open_folder
  _one_line_error(r"needs config.data.data_dir=PATH", open_folder, folder_config("").data)
  _one_line_error(r"data_dir=.*/nope is not a folder", open_folder,
                  folder_config(tmp_path / "nope").data)
  (tmp_path / "empty" / "sub").mkdir(parents=True)
  (tmp_path / "empty" / "a.txt").write_text("x")
  _one_line_error(r"holds no image files \(looked for \.png, \.jpg", open_folder,
                  folder_config(tmp_path / "empty").data)
  _one_line_error(r"bad_images='maybe'; allowed: stop, skip", open_folder,
                  folder_config(tmp_path / "empty", bad_images="maybe").data)


def test_a_truncated_or_broken_image_stops_naming_it_or_is_skipped_and_counted(tmp_path, caplog):
  root = make_folder(str(tmp_path / "f"), n=12, classes=())
  good = open(os.path.join(root, "img004.png"), "rb").read()
  with open(os.path.join(root, "img004.png"), "wb") as f:
    f.write(good[:len(good) // 2])  # Truncated.
  with open(os.path.join(root, "zz_not_an_image.jpg"), "wb") as f:
    f.write(b"this is text")
  msg = _one_line_error(r"img004\.png is not a readable image \(.*\); fix or remove it, or set "
                        r"data.bad_images='skip'", image_folder.open_folder,
                        folder_config(root).data)
  assert root in msg
  with caplog.at_level(std_logging.WARNING):
    folder = image_folder.open_folder(folder_config(root, bad_images="skip").data)
  assert folder.num_examples == 11 and len(folder.skipped) == 2
  assert {f for f, _ in folder.skipped} == {"img004.png", "zz_not_an_image.jpg"}
  assert "skipped 2 unreadable image(s) of 13" in caplog.text


def test_sizes_that_pad_or_none_cannot_take_name_the_file(tmp_path):
  root = make_folder(str(tmp_path / "f"), n=3, classes=(), size=(16, 16))
  # img000 is 24x16 (the mixed size): 'none' needs 16x16, 'pad' cannot shrink it.
  _one_line_error(r"img000\.png is 16x24, not image_size=16, and data\.resize_method='none'",
                  image_folder.open_folder, folder_config(root, resize_method="none").data)
  _one_line_error(r"img000\.png is 16x24, larger than image_size=16",
                  image_folder.open_folder, folder_config(root, resize_method="pad").data)


def test_labels_against_the_model(tmp_path, caplog):
  root = make_folder(str(tmp_path / "f"), n=9, classes=("a", "b", "c"))
  builder = input_pipeline.get_builder(folder_config(root).data, 3)
  assert builder.class_names == ("a", "b", "c")
  input_pipeline.check_labels(builder, folder_config(root).data, 3)
  _one_line_error(r"num_classes=5 but the image folder .* has 3 class subfolder\(s\) \(a, b, c\); "
                  r"allowed: model.num_classes=3 \(or 0: unconditional\)\.",
                  input_pipeline.check_labels, builder, folder_config(root).data, 5)
  with caplog.at_level(std_logging.INFO):
    input_pipeline.check_labels(builder, folder_config(root).data, 0)
  assert "3 subfolders (a, b, c); the model is unconditional" in caplog.text
  _save(os.path.join(root, "loose.png"), np.zeros((16, 16, 3)))
  _one_line_error(r"has 1 image\(s\) outside the class subfolders \(e.g. loose.png\)",
                  input_pipeline.get_builder, folder_config(root).data, 3)
  flat = make_folder(str(tmp_path / "flat"), n=4, classes=())
  _one_line_error(r"has 0 class subfolder\(s\); allowed: model.num_classes=0",
                  input_pipeline.check_labels,
                  input_pipeline.get_builder(folder_config(flat).data, 2),
                  folder_config(flat).data, 2)


def test_fewer_images_than_one_batch(tmp_path):
  root = make_folder(str(tmp_path / "f"), n=5, classes=())
  c = folder_config(root)
  _one_line_error(r"config.data.split='train' of 'image_folder' in .* gives this process 5 "
                  r"examples, fewer than one batch \(8 per process",
                  input_pipeline.create_train_iterator, c, 0)


def test_read_folder_uint8_for_editing_inputs(tmp_path):
  root = make_folder(str(tmp_path / "f"), n=4, classes=("x",), size=(16, 16))
  images = image_folder.read_folder_uint8(root, (16, 16, 3), 3, "resize", "config.edit.input")
  assert images.shape == (3, 16, 16, 3)
  np.testing.assert_allclose(images[:, 8, 8, 0], [3, 8, 13], atol=4)
  (tmp_path / "none").mkdir()
  _one_line_error(r"config.edit.input=.* holds no image files", image_folder.read_folder_uint8,
                  str(tmp_path / "none"), (16, 16, 3), 3, "resize", "config.edit.input")


def test_fingerprint_changes_with_the_files(tmp_path):
  root = make_folder(str(tmp_path / "f"), n=3, classes=())
  first = image_folder.fingerprint(root)
  assert image_folder.fingerprint(root) == first
  _save(os.path.join(root, "new.png"), np.zeros((4, 4)))
  assert image_folder.fingerprint(root) != first


@given(names=st.sets(st.from_regex(r"[a-z]{1,3}/[a-z0-9]{1,6}\.png", fullmatch=True), max_size=30),
       drop=st.integers(0, 29))
def test_example_order_is_a_fixed_shuffle_that_other_files_do_not_change(names, drop):
  names = sorted(names)
  order = image_folder.example_order(names)
  assert sorted(order) == names and image_folder.example_order(order[::-1]) == order
  if names:  # Removing (or adding) a file leaves the order of the others as it was.
    gone = names[drop % len(names)]
    assert image_folder.example_order([n for n in names if n != gone]) == [
        n for n in order if n != gone]


def test_held_out_slice_mixes_the_classes(tmp_path):
  root = make_folder(str(tmp_path / "f"), n=60, classes=("a", "b", "c"), size=(8, 8))
  folder = image_folder.open_folder(folder_config(root, image_size=8).data, labelled=True)
  held_out = folder.labels[folder.indices("train[80%:]")]
  assert len(set(held_out.tolist())) == 3  # Sorted paths would hold out only class "c".


def test_orientation_bit_depth_and_transparency(tmp_path):
  # EXIF orientation 6 (rotate 90 clockwise to view): a 4x2 stored image is seen as 2x4.
  a = np.zeros((2, 4, 3), np.uint8)
  a[:, 0] = 255  # Left column white as stored.
  im = Image.fromarray(a)
  exif = im.getexif()
  exif[0x0112] = 6
  im.save(tmp_path / "rot.jpg", exif=exif, quality=100)
  seen = image_folder.read_image(str(tmp_path / "rot.jpg"), 3, 4, "pad")
  assert seen[0, 1:3].mean() > 200 and seen[3, 1:3].mean() < 50  # White on top now.
  # 16 bits: 0..65535 scaled to 0..255, not clipped at 255.
  ramp = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369)
  Image.fromarray(ramp).save(tmp_path / "deep.png")
  got = image_folder.read_image(str(tmp_path / "deep.png"), 1, 4, "none")[..., 0]
  np.testing.assert_array_equal(got, np.round(ramp / 257.0).astype(np.uint8))
  # Transparent pixels are black, whatever colour they carry.
  rgba = np.zeros((4, 4, 4), np.uint8)
  rgba[..., :3] = 200
  rgba[:2, :, 3] = 255
  Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
  got = image_folder.read_image(str(tmp_path / "alpha.png"), 3, 4, "none")
  assert np.all(got[:2] == 200) and np.all(got[2:] == 0)


def test_a_symlink_cycle_is_walked_once(tmp_path):
  root = make_folder(str(tmp_path / "f"), n=3, classes=("a",), size=(8, 8))
  os.symlink(root, os.path.join(root, "a", "loop"))
  assert len(image_folder.list_image_files(root)) == 3


def test_a_resumed_run_checks_its_folder(tmp_path, caplog):
  from ddpm.jobs import train as train_job
  root = make_folder(str(tmp_path / "f"), n=6, classes=("a", "b"), size=(8, 8))
  workdir = str(tmp_path / "w")
  os.makedirs(workdir)
  c = folder_config(root, image_size=8)
  folder = image_folder.open_folder(c.data, labelled=True)
  train_job.check_folder(workdir, folder, 2)
  manifest = json.load(open(os.path.join(workdir, "image_folder.json")))
  assert manifest["num_images"] == 6 and manifest["classes"] == ["a", "b"]
  assert manifest["counts"] == [3, 3]
  train_job.check_folder(workdir, folder, 2)  # Unchanged: nothing to say.
  _save(os.path.join(root, "a", "new.png"), np.zeros((8, 8, 3)))
  with caplog.at_level(std_logging.WARNING):
    train_job.check_folder(workdir, image_folder.open_folder(c.data, labelled=True), 2)
  assert "changed since this workdir's last run (6 images then, 7 now)" in caplog.text
  os.rename(os.path.join(root, "b"), os.path.join(root, "c"))
  _one_line_error(r"the image folder's classes changed since this workdir's run started "
                  r"\(\['a', 'b'\] then, \['a', 'c'\] now", train_job.check_folder, workdir,
                  image_folder.open_folder(c.data, labelled=True), 2)
