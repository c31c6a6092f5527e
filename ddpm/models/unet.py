"""The DDPM U-Net (Ho et al. 2020, Sec. 4 and App. B), in Flax linen, NHWC.

A PixelCNN++-style U-Net: a sinusoidal time-step embedding passed through a 2-layer MLP (plus,
for a class-conditional model, a learned class embedding, as in Dhariwal & Nichol 2021 and Ho &
Salimans 2022, whose last row is the "no class" label of classifier-free guidance) is
added inside every residual block (GroupNorm, SiLU, conv, + time embedding, GroupNorm, SiLU,
dropout, conv), single-head self-attention at the configured resolutions, `len(ch_mult) - 1`
down-/up-sampling stages with skip connections, and zero-initialized last convolutions so each
block starts as the identity and the network starts by predicting 0.

Submodules are named by place, so parameters can be chosen by pattern (fine-tuning, see
`ddpm.training.finetune`): time_mlp_{0,1}, class_embedding, conv_in, down_<level>_res_<i>,
down_<level>_attn_<i>, down_<level>_downsample, mid_res_0, mid_attn, mid_res_1,
up_<level>_res_<i>, up_<level>_attn_<i>, up_<level>_upsample, out_norm, conv_out. Levels count
from the full resolution (0) down; the up path runs from the deepest level back to 0.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ddpm.kernels import conv as kernels_conv

Dtype = Any


def _conv(features: int, kernel_size: Sequence[int], **kwargs) -> nn.Conv:
  """`nn.Conv` whose convolution is `ddpm.kernels.conv.conv_general_dilated`: oneDNN on CPU
  where the extension is built, `lax.conv_general_dilated` otherwise (same parameters)."""
  return nn.Conv(features, kernel_size, conv_general_dilated=kernels_conv.conv_general_dilated,
                 **kwargs)


def timestep_embedding(t: jnp.ndarray, dim: int, max_period: float = 10000.0) -> jnp.ndarray:
  """Sinusoidal embedding of (possibly fractional) time steps, [B] -> [B, dim].

  As in the Transformer (Vaswani et al. 2017, Sec. 3.5) and DDPM's `get_timestep_embedding`:
  e_j = sin(t w_j) for j < dim/2 and cos(t w_j) for the rest, w_j = max_period^(-j / (dim/2 - 1)).
  """
  if dim < 4 or dim % 2:
    raise ValueError(f"time embedding dim={dim} must be an even number >= 4.")
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - 1))
  args = t.astype(jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


def _norm(num_groups: int, dtype: Dtype, name: str | None = None) -> nn.GroupNorm:
  return nn.GroupNorm(num_groups=num_groups, dtype=dtype, name=name)


class ResnetBlock(nn.Module):
  """Residual block with time-embedding injection (DDPM `resnet_block`)."""

  out_ch: int
  num_groups: int
  dropout: float
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, temb, train: bool):
    h = nn.silu(_norm(self.num_groups, self.dtype)(x))
    h = _conv(self.out_ch, (3, 3), dtype=self.dtype)(h)
    h = h + nn.Dense(self.out_ch, dtype=self.dtype)(nn.silu(temb))[:, None, None, :]
    h = nn.silu(_norm(self.num_groups, self.dtype)(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = _conv(self.out_ch, (3, 3), dtype=self.dtype, kernel_init=nn.initializers.zeros)(h)
    if x.shape[-1] != self.out_ch:
      x = nn.Dense(self.out_ch, dtype=self.dtype, name="skip")(x)  # 1x1 conv (NIN).
    return x + h


class AttnBlock(nn.Module):
  """Single-head spatial self-attention with a residual connection (DDPM `attn_block`)."""

  num_groups: int
  num_heads: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    B, H, W, C = x.shape
    if C % self.num_heads:
      raise ValueError(f"attention channels {C} are not divisible by num_heads={self.num_heads}.")
    h = _norm(self.num_groups, self.dtype)(x).reshape(B, H * W, C)
    qkv = nn.DenseGeneral((3, self.num_heads, C // self.num_heads), dtype=self.dtype)(h)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    h = nn.dot_product_attention(q, k, v, dtype=self.dtype)
    h = nn.DenseGeneral(C, axis=(-2, -1), dtype=self.dtype,
                        kernel_init=nn.initializers.zeros)(h)
    return x + h.reshape(B, H, W, C)


class Downsample(nn.Module):
  """Halves height and width with a stride-2 3x3 convolution."""

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return _conv(x.shape[-1], (3, 3), strides=(2, 2), dtype=self.dtype)(x)


class Upsample(nn.Module):
  """Doubles height and width (nearest neighbour) followed by a 3x3 convolution."""

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    B, H, W, C = x.shape
    x = jax.image.resize(x, (B, 2 * H, 2 * W, C), method="nearest")
    return _conv(C, (3, 3), dtype=self.dtype)(x)


def check_unet_config(image_size: int, ch: int, ch_mult: Sequence[int], num_res_blocks: int,
                      attn_resolutions: Sequence[int], num_groups: int) -> None:
  """Raises a one-line ValueError if the U-Net cannot take `image_size` or is misconfigured."""
  if ch < 1 or num_res_blocks < 1 or not ch_mult or min(ch_mult) < 1:
    raise ValueError(
        f"U-Net needs ch >= 1, num_res_blocks >= 1 and positive ch_mult; got ch={ch}, "
        f"num_res_blocks={num_res_blocks}, ch_mult={tuple(ch_mult)}.")
  factor = 2 ** (len(ch_mult) - 1)
  if image_size < factor or image_size % factor:
    raise ValueError(
        f"image_size={image_size} cannot pass {len(ch_mult) - 1} down-samplings of ch_mult="
        f"{tuple(ch_mult)}: allowed sizes are multiples of {factor}; pad/resize the data "
        f"(config.data.image_size) or shorten ch_mult.")
  resolutions = [image_size // 2**i for i in range(len(ch_mult))]
  bad = [r for r in attn_resolutions if r not in resolutions]
  if bad:
    raise ValueError(
        f"attn_resolutions={tuple(attn_resolutions)} includes {bad}, which the U-Net never "
        f"reaches; allowed: {resolutions}.")
  for c in {ch * m for m in ch_mult}:
    if c % num_groups:
      raise ValueError(
          f"GroupNorm num_groups={num_groups} must divide every channel count; "
          f"ch * ch_mult gives {c}.")


class UNet(nn.Module):
  """eps/x0/v-prediction U-Net f(x_t, t) -> same shape as x_t.

  Attributes:
    ch: base channel count.
    ch_mult: channel multiplier per resolution level; len(ch_mult) - 1 down-samplings.
    num_res_blocks: residual blocks per level on the way down (one more on the way up).
    attn_resolutions: spatial sizes (height) at which self-attention follows each block.
    dropout: dropout rate inside residual blocks.
    num_groups: GroupNorm groups (must divide every channel count).
    num_heads: attention heads (the paper uses 1).
    out_channels: output channels (defaults to the input's).
    num_classes: 0 for an unconditional model; K > 0 for a class-conditional one, which takes
      labels y in {0..K} where y = K is the null label ("no class", classifier-free guidance).
    dtype: computation dtype (parameters stay float32).
  """

  ch: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  num_groups: int = 32
  num_heads: int = 1
  out_channels: int | None = None
  num_classes: int = 0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, t: jnp.ndarray, y: jnp.ndarray | None = None,
               train: bool = False) -> jnp.ndarray:
    if x.ndim != 4:
      raise ValueError(f"UNet input must be [batch, height, width, channels], got {x.shape}.")
    B, H, W, C = x.shape
    if H != W:
      raise ValueError(f"UNet needs square images, got height {H} and width {W}.")
    if t.shape != (B,):
      raise ValueError(f"time steps must have shape [batch]=({B},), got {t.shape}.")
    if self.num_classes > 0 and (y is None or y.shape != (B,)):
      raise ValueError(f"a class-conditional U-Net (num_classes={self.num_classes}) needs labels "
                       f"of shape [batch]=({B},) in 0..{self.num_classes} ({self.num_classes}: no "
                       f"class), got {None if y is None else y.shape}.")
    if self.num_classes == 0 and y is not None:
      raise ValueError("class labels were given to an unconditional U-Net (num_classes=0); "
                       "train a class-conditional model (config.model.num_classes > 0).")
    check_unet_config(H, self.ch, self.ch_mult, self.num_res_blocks, self.attn_resolutions,
                      self.num_groups)
    dt = self.dtype
    block = lambda c, name: ResnetBlock(c, self.num_groups, self.dropout, dt, name=name)
    attn = lambda name: AttnBlock(self.num_groups, self.num_heads, dt, name=name)

    temb = timestep_embedding(t, self.ch)
    temb = nn.Dense(4 * self.ch, dtype=dt, name="time_mlp_0")(temb)
    temb = nn.Dense(4 * self.ch, dtype=dt, name="time_mlp_1")(nn.silu(temb))
    if self.num_classes > 0:  # Row num_classes is the null label.
      temb = temb + nn.Embed(self.num_classes + 1, 4 * self.ch, dtype=dt,
                             name="class_embedding")(y)

    hs = [_conv(self.ch, (3, 3), dtype=dt, name="conv_in")(x.astype(dt))]
    for level, mult in enumerate(self.ch_mult):
      for i in range(self.num_res_blocks):
        h = block(self.ch * mult, f"down_{level}_res_{i}")(hs[-1], temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attn(f"down_{level}_attn_{i}")(h)
        hs.append(h)
      if level != len(self.ch_mult) - 1:
        hs.append(Downsample(dt, name=f"down_{level}_downsample")(hs[-1]))

    h = hs[-1]
    h = block(h.shape[-1], "mid_res_0")(h, temb, train)
    h = attn("mid_attn")(h)
    h = block(h.shape[-1], "mid_res_1")(h, temb, train)

    for level, mult in reversed(list(enumerate(self.ch_mult))):
      for i in range(self.num_res_blocks + 1):
        h = block(self.ch * mult, f"up_{level}_res_{i}")(
            jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attn(f"up_{level}_attn_{i}")(h)
      if level != 0:
        h = Upsample(dt, name=f"up_{level}_upsample")(h)
    assert not hs, "every skip connection is used once"

    h = nn.silu(_norm(self.num_groups, dt, name="out_norm")(h))
    out = _conv(self.out_channels or C, (3, 3), dtype=dt,
                  kernel_init=nn.initializers.zeros, name="conv_out")(h)
    return out.astype(jnp.float32)
