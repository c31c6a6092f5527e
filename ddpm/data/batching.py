"""Fixed-size batches over a set of examples, so a jit-compiled function sees one shape."""

from __future__ import annotations

import numpy as np


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """`x` with its last row repeated up to `rows` rows (unchanged if it has as many)."""
  x = np.asarray(x)
  return x if len(x) >= rows else np.concatenate([x, np.repeat(x[-1:], rows - len(x), 0)])


def padded_batches(x: np.ndarray, batch_size: int):
  """Yields (start, batch, n) over `x` in batches of `batch_size`; a short last batch is padded
  by repeating its last row (so a jit-compiled function sees one shape) and n says how many
  rows are real. A set smaller than one batch is passed as it is."""
  for i in range(0, len(x), batch_size):
    chunk = x[i:i + batch_size]
    n = len(chunk)
    if len(x) > batch_size:
      chunk = pad_rows(chunk, batch_size)
    yield i, chunk, n
