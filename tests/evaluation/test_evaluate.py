"""The shipped feature classifiers and the sample-quality metrics on real MNIST / Fashion-MNIST."""

import functools
import os
import pathlib

import numpy as np
import pytest
from ml_collections import config_dict

from ddpm.data import image_files, input_pipeline
from ddpm.evaluation import features, sample_quality as quality
from ddpm.jobs import evaluate
from ddpm.models import classifier

pytestmark = pytest.mark.skipif(
    not (pathlib.Path(os.environ.get("TFDS_DATA_DIR", "/nonexistent")) / "mnist").is_dir(),
    reason="needs the prepared MNIST in TFDS_DATA_DIR")


def data_config(dataset):
  return config_dict.ConfigDict({"data": dict(dataset=dataset, data_dir="", image_size=28,
                                              channels=1, resize_method="none")})


@functools.lru_cache(maxsize=None)
def split(dataset, name, num=None):
  return input_pipeline.load_split_uint8(data_config(dataset), name, num)


@pytest.mark.parametrize("dataset, floor", [("mnist", 0.99), ("fashion_mnist", 0.90)])
def test_shipped_classifiers_reach_the_required_test_accuracy(dataset, floor):
  images, labels = split(dataset, "test")
  assert len(images) == 10_000
  assert features.accuracy(features.classifier_extractor(dataset), images, labels) >= floor


@functools.lru_cache(maxsize=None)
def mnist_features():
  ex = features.classifier_extractor("mnist")
  ref = quality.reference_statistics(data_config("mnist"), ex, "train", None, num=5000)
  return ex, ref


def blur(images, radius):
  from PIL import Image, ImageFilter  # pylint: disable=g-import-not-at-top
  return np.stack([np.asarray(Image.fromarray(x[..., 0]).filter(ImageFilter.GaussianBlur(radius)))
                   for x in images])[..., None]


def test_fid_grows_as_real_images_are_blurred_or_noised():
  ex, ref = mnist_features()
  test, _ = split("mnist", "test", 1000)
  fid = lambda x: quality.sample_quality(ex, x, ref)["fid"]
  blurred = [fid(blur(test, r)) for r in (0.5, 1.0, 2.0)]
  rng = np.random.default_rng(0)
  noised = [fid(np.clip(test + rng.normal(0, s, test.shape), 0, 255).astype(np.uint8))
            for s in (20, 60, 120)]
  clean = fid(test)
  assert clean < blurred[0] < blurred[1] < blurred[2]
  assert clean < noised[0] < noised[1] < noised[2]


def test_real_test_images_score_like_real_data_and_failures_show_where_expected():
  """The floor: test vs train has a small FID, IS near the 10 classes, high precision/recall.
  Uniform noise is far in FID with IS 1 and recall 0; a 'model' that only draws ones has high
  precision (real-looking) but recall 0 and IS 1 (no diversity)."""
  ex, ref = mnist_features()
  test, labels = split("mnist", "test", 1000)
  real = quality.sample_quality(ex, test, ref)
  assert real["fid"] < 10 and real["inception_score"] > 9
  assert real["precision"] > 0.8 and real["recall"] > 0.8
  noise = quality.sample_quality(
      ex, np.random.default_rng(0).integers(0, 256, test.shape).astype(np.uint8), ref)
  assert noise["fid"] > 50 * real["fid"] and noise["recall"] == 0.0
  assert noise["inception_score"] < 1.1
  ones = quality.sample_quality(ex, np.resize(test[labels == 1], test.shape), ref)
  assert ones["fid"] > 50 * real["fid"] and ones["precision"] > 0.9 and ones["recall"] < 0.01
  assert ones["inception_score"] < 1.1


def test_reference_statistics_are_cached(tmp_path):
  ex = features.classifier_extractor("mnist")
  first = quality.reference_statistics(data_config("mnist"), ex, "test", str(tmp_path), num=300)
  again = quality.reference_statistics(data_config("mnist"), ex, "test", str(tmp_path), num=300)
  assert not first["cached"] and again["cached"]
  np.testing.assert_array_equal(first["sigma"], again["sigma"])


def test_bad_samples_get_one_line_errors(tmp_path):
  ex = features.classifier_extractor("mnist")
  with pytest.raises(ValueError, match="NaN") as e:
    ex(np.full((4, 28, 28, 1), np.nan, np.float32))
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="1-channel"):
    ex(np.zeros((4, 28, 28, 3), np.uint8))
  path = tmp_path / "s.npz"
  np.savez(path, images=np.zeros((4, 32, 32, 1), np.uint8))
  with pytest.raises(ValueError, match=r"expects \(28, 28, 1\)"):
    image_files.read_npz_images(str(path), (28, 28, 1), config_key="config.eval.samples_npz")
  np.savez(path, x=np.zeros(3))
  with pytest.raises(ValueError, match="no 'images' array"):
    image_files.read_npz_images(str(path), (28, 28, 1), config_key="config.eval.samples_npz")
  with pytest.raises(ValueError, match="no project classifier for dataset 'cifar10'"):
    features.classifier_extractor("cifar10")
  with pytest.raises(ValueError, match="classifier weights .* not found"):
    classifier.load_params(str(tmp_path / "missing.npz"))


@pytest.mark.parametrize("key, value, message", [
    ("metrics", "fid", "config.eval.metrics has 'fid'"),
    ("bpd_variance", "large", "eval.bpd_variance='large'"),
    ("bpd_num_strata", 1001, "bpd_num_strata=1001"),
    ("denoise_sigmas", (0.1, -0.2), "denoise_sigmas has -0.2"),
    ("num_samples", 0, "eval.num_samples=0"),
])
def test_bad_eval_config_gets_a_one_line_error_before_any_work(tmp_path, key, value, message):
  from configs import mnist  # pylint: disable=g-import-not-at-top
  c = mnist.get_config()
  c.eval[key] = value
  with pytest.raises(ValueError, match=message) as e:
    evaluate.EvalJob.setup(c, str(tmp_path))
  assert "\n" not in str(e.value)
