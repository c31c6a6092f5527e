"""The Flax networks and how to build them from a config.

  unet        the DDPM U-Net (time-step embedding, residual blocks, attention, class embedding)
  build       the U-Net of a config, its fresh parameters, the image shape it takes
  classifier  the small CNN whose features FID/IS/precision-recall use on MNIST-like data
  inception   the FID Inception-v3 (pytorch-fid's port), weights from a user's file
"""

from ddpm.models import build, classifier, inception, unet
from ddpm.models.build import create_model, image_shape, init_params
from ddpm.models.unet import UNet

__all__ = ["build", "classifier", "inception", "unet", "create_model", "image_shape",
           "init_params", "UNet"]
