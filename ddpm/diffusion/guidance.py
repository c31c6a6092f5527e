r"""Classifier-free guidance (Ho & Salimans 2022), autoguidance (Karras et al. 2024) and class
labels for sampling (pure functions).

A class-conditional model trained with label dropout (the label replaced by a null label with
probability p_uncond, Ho & Salimans 2022, Alg. 1) predicts both eps(x_t, c) and the
unconditional eps(x_t) = eps(x_t, null). Guidance with weight w samples with (their eq. 6)

    eps_w(x_t, c) = (1 + w) eps(x_t, c) - w eps(x_t),

the eps of the tilted density p(x_t | c)^(1 + w) p(x_t)^(-w), proportional to
p(x_t) p(c | x_t)^(1 + w) (Bayes' rule): w = 0 is the conditional model, w = -1 the
unconditional one, w > 0 sharpens the class at the cost of diversity.

eps, x0 and v are each affine in the network output given x_t (e.g. eps = (x_t - sqrt(alpha_bar)
x0) / sqrt(1 - alpha_bar)), so guiding the raw output with the same weights is the same as
guiding eps, whatever `prediction_type` the model has. `guided_denoise_fn` evaluates both terms
in one network call on the doubled batch [x_t; x_t] with labels [c; null].

Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself",
Sec. 3) guides a model D_1 with a weaker version D_0 of itself (smaller, or trained for less)
instead of the unconditional model:

    D_w(x; sigma) = w D_1(x; sigma) + (1 - w) D_0(x; sigma)   (their w; 1: no guidance),

which is the same extrapolation as eq. 6 above with this module's weight w' = w - 1:
D_1 + w' (D_1 - D_0). It needs no labels, so it guides unconditional models too: the errors
the weaker model makes more of are pushed against, which sharpens samples towards the data
(their Sec. 3). `autoguided_denoise_fn` combines the two networks' raw outputs, which is the
same as combining their x0 (or eps) since the weights sum to 1 and each is affine in the output.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

LabeledDenoiseFn = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]


def guided_output(out_cond: jnp.ndarray, out_uncond: jnp.ndarray, w) -> jnp.ndarray:
  """(1 + w) out_cond - w out_uncond (Ho & Salimans 2022, eq. 6)."""
  return out_cond + w * (out_cond - out_uncond)


def guided_denoise_fn(denoise_fn: LabeledDenoiseFn, labels: jnp.ndarray, null_label: int,
                      w: float) -> Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]:
  """f(x_t, t) = the guided output of `denoise_fn(x_t, t, y)` for `labels` [B] with weight w.

  w = 0 calls the network once on the conditional batch, w = -1 once on the null labels;
  any other w calls it once on the doubled batch [x_t; x_t] with labels [labels; null].
  `w` must be a Python number (it decides the shape of the network call).
  """
  w = float(w)
  null = jnp.full_like(labels, null_label)
  if w == 0.0:
    return lambda x, t: denoise_fn(x, t, labels)
  if w == -1.0:
    return lambda x, t: denoise_fn(x, t, null)

  def fn(x, t):
    b = x.shape[0]
    out = denoise_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                     jnp.concatenate([labels, null]))
    return guided_output(out[:b], out[b:], w)
  return fn


def autoguided_denoise_fn(denoise_fn: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray],
                          guide_fn: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray],
                          w, t_range: tuple[int, int] | None = None
                          ) -> Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]:
  """f(x_t, t) = (1 + w) denoise_fn(x_t, t) - w guide_fn(x_t, t): autoguidance (Karras et al.
  2024, Sec. 3, with their weight 1 + w). w = 0 is `denoise_fn` alone (the guide is not called);
  otherwise each call evaluates both networks.

  With `t_range` = (lo, hi), guidance applies only to examples with lo <= t <= hi, as
  guidance limited to an interval of noise levels (Kynkaanniemi et al. 2024); the others get
  `denoise_fn` alone, and a call whose t are all outside skips the guide (`lax.cond`: one
  network evaluation). `w` and `t_range` must be Python numbers (they shape the program)."""
  w = float(w)
  if w == 0.0:
    return denoise_fn
  if t_range is None:
    return lambda x, t: guided_output(denoise_fn(x, t), guide_fn(x, t), w)
  lo, hi = int(t_range[0]), int(t_range[1])

  def fn(x, t):
    out = denoise_fn(x, t)
    inside = (t >= lo) & (t <= hi)
    guided = jax.lax.cond(jnp.any(inside), lambda: guided_output(out, guide_fn(x, t), w),
                          lambda: out)
    return jnp.where(inside.reshape((-1,) + (1,) * (out.ndim - 1)), guided, out)
  return fn


def class_labels(num: int, num_classes: int, class_label: int = -1) -> np.ndarray:
  """Labels int32 [num] for sampling: all `class_label`, or for class_label = -1 balanced
  contiguous blocks, label i * num_classes // num (one row per class in a grid of
  num / num_classes columns when num_classes divides num)."""
  if num_classes < 1:
    raise ValueError(f"num_classes={num_classes} must be >= 1 for class labels.")
  if class_label == -1:
    return (np.arange(num, dtype=np.int64) * num_classes // num).astype(np.int32)
  check_class_label(class_label, num_classes)
  return np.full((num,), class_label, np.int32)


def check_class_label(class_label, num_classes: int, name: str = "config.sampling.class_label"
                      ) -> None:
  """One-line ValueError unless class_label is -1 (one row per class) or in 0..num_classes-1."""
  if isinstance(class_label, bool) or not isinstance(class_label, (int, np.integer)):
    raise ValueError(f"{name}={class_label!r} must be an integer.")
  if num_classes == 0 and class_label != -1:
    raise ValueError(f"{name}={class_label} asks for a class from an unconditional model "
                     "(config.model.num_classes=0); allowed: -1.")
  if not -1 <= class_label < num_classes:
    raise ValueError(f"{name}={class_label} is out of range for a model of {num_classes} "
                     f"classes; allowed: 0..{num_classes - 1}, or -1 for one row per class.")
