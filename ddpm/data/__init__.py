"""Images in and out.

  input_pipeline  tensorflow-datasets + tf.data: deterministic, resumable, per-process batches
  image_arrays    the conventions: uint8 [N, H, W, C] <-> float32 in [-1, 1], checks
  batching        fixed-size batches over a set (one compiled shape)
  image_files     a user's .npz or folder of PNGs, PNG masks
  tfds_writer     arrays written as a TFDS dataset that training reads

TensorFlow itself is imported only when a pipeline first runs.
"""

from ddpm.data import batching, image_arrays, image_files, input_pipeline, tfds_writer
from ddpm.data.image_arrays import check_images, to_uint8, uint8_to_model_range
from ddpm.data.input_pipeline import create_train_iterator, load_split_uint8

__all__ = ["batching", "image_arrays", "image_files", "input_pipeline", "tfds_writer",
           "check_images", "to_uint8", "uint8_to_model_range", "create_train_iterator",
           "load_split_uint8"]
