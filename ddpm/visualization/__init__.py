"""Images a person can look at.

  grids            uint8 images tiled into one PNG
  figures          labelled rows of images (original / noisy / denoised), anomaly histograms
  process_figures  strips and GIFs of the forward process and of a reverse trajectory
"""

from ddpm.visualization import figures, grids, process_figures
from ddpm.visualization.grids import make_grid, save_grid

__all__ = ["figures", "grids", "process_figures", "make_grid", "save_grid"]
