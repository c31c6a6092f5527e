"""The U-Net of a run's config: building it, its fresh parameters, and the image shape it takes."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ddpm.models.unet import UNet


def image_shape(config) -> tuple[int, int, int]:
  return (config.data.image_size, config.data.image_size, config.data.channels)


def create_model(config) -> UNet:
  m = config.model
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[m.dtype]
  return UNet(ch=m.ch, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
              attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
              num_groups=m.num_groups, num_heads=m.num_heads, num_classes=m.num_classes,
              dtype=dtype)


def init_params(model: UNet, key: jax.Array, shape):
  """Fresh parameters of `model` for images of `shape` (H, W, C)."""
  y = jnp.zeros((1,), jnp.int32) if model.num_classes else None
  return model.init(key, jnp.zeros((1,) + tuple(shape)), jnp.zeros((1,), jnp.int32), y)["params"]
