"""The Inception-v3 of the standard FID, in Flax linen, NHWC, with weights from a user's file.

Inception-v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer Vision")
is the network whose 2048-d pool3 features the Frechet Inception Distance (Heusel et al. 2017,
"GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium") compares.
The standard FID uses one particular graph, TensorFlow's `inception-2015-12-05`; this module is
pytorch-fid's port of it (mseitzer/pytorch-fid, `src/pytorch_fid/inception.py`: torchvision's
`Inception3` with `FIDInceptionA/C/E_1/E_2` blocks), layer for layer:

  * BasicConv2d = conv without bias -> BatchNorm (eps 1e-3, running statistics) -> relu;
  * the average pools inside Mixed_5b..5d, 6b..6e and 7b leave the zero padding out of the mean
    (TF's `count_include_pad=False`), and Mixed_7c's pool branch is a *max* pool (FIDInceptionE_2);
  * the input is resized to 299x299 bilinearly as torch's `F.interpolate(mode="bilinear",
    align_corners=False)` does (no antialiasing, also when downsampling);
  * the classifier is the graph's 1008-way fc on pool3.

Inputs are float32 NHWC images in [-1, 1] (pytorch-fid's `2 * x - 1` of its [0, 1] input), any
size, 1 or 3 channels (1 is repeated to 3). Outputs: (pool3 features [N, 2048], logits [N, 1008]).
Convolutions run at `Precision.HIGHEST` so accelerators don't round to TF32/bf16.

Weights (not shipped; about 95 MB): download pytorch-fid's

  https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

and convert it to an .npz with the torch state_dict names as keys:

  python experiments/inception/convert_pt_inception.py pt_inception-2015-12-05-6726825d.pth \
      fid_inception.npz

`experiments/inception/` also has the parity check against pytorch-fid itself. The FID feature
extractor built on it is `ddpm.evaluation.features.inception_extractor`.
"""

from __future__ import annotations

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               "pt_inception-2015-12-05-6726825d.pth")
CONVERT_CMD = ("python experiments/inception/convert_pt_inception.py "
               "pt_inception-2015-12-05-6726825d.pth fid_inception.npz")
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008
HIGHEST = jax.lax.Precision.HIGHEST


class BasicConv2d(nn.Module):
  """torchvision's BasicConv2d: conv (no bias) -> BatchNorm(eps=1e-3, inference) -> relu."""
  features: int
  kernel: int | tuple[int, int]
  stride: int = 1
  padding: int | tuple[int, int] = 0

  @nn.compact
  def __call__(self, x):
    k = (self.kernel,) * 2 if isinstance(self.kernel, int) else self.kernel
    ph, pw = (self.padding,) * 2 if isinstance(self.padding, int) else self.padding
    x = nn.Conv(self.features, k, (self.stride,) * 2, padding=((ph, ph), (pw, pw)),
                use_bias=False, precision=HIGHEST, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x):  # F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x):  # F.max_pool2d(x, 3, stride=2)
  return nn.max_pool(x, (3, 3), (2, 2), "VALID")


class FIDInceptionA(nn.Module):  # Mixed_5b, 5c, 5d
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(64, 1, name="branch1x1")(x)
    b5 = BasicConv2d(48, 1, name="branch5x5_1")(x)
    b5 = BasicConv2d(64, 5, padding=2, name="branch5x5_2")(b5)
    b3 = BasicConv2d(64, 1, name="branch3x3dbl_1")(x)
    b3 = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(b3)
    b3 = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_3")(b3)
    bp = BasicConv2d(self.pool_features, 1, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):  # Mixed_6a
  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(384, 3, stride=2, name="branch3x3")(x)
    bd = BasicConv2d(64, 1, name="branch3x3dbl_1")(x)
    bd = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = BasicConv2d(96, 3, stride=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class FIDInceptionC(nn.Module):  # Mixed_6b..6e
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = BasicConv2d(192, 1, name="branch1x1")(x)
    b7 = BasicConv2d(c7, 1, name="branch7x7_1")(x)
    b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = BasicConv2d(c7, 1, name="branch7x7dbl_1")(x)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = BasicConv2d(192, 1, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):  # Mixed_7a
  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(192, 1, name="branch3x3_1")(x)
    b3 = BasicConv2d(320, 3, stride=2, name="branch3x3_2")(b3)
    b7 = BasicConv2d(192, 1, name="branch7x7x3_1")(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv2d(192, 3, stride=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class FIDInceptionE(nn.Module):
  """Mixed_7b (FIDInceptionE_1, pool="avg") and Mixed_7c (FIDInceptionE_2, pool="max")."""
  pool: str

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(320, 1, name="branch1x1")(x)
    b3 = BasicConv2d(384, 1, name="branch3x3_1")(x)
    b3 = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], -1)
    bd = BasicConv2d(448, 1, name="branch3x3dbl_1")(x)
    bd = BasicConv2d(384, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], -1)
    if self.pool == "avg":
      bp = _avg_pool_3x3(x)
    else:  # F.max_pool2d(x, 3, stride=1, padding=1): the padding is -inf.
      bp = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    bp = BasicConv2d(192, 1, name="branch_pool")(bp)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def resize_bilinear(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
  """NHWC resize equal to torch's `F.interpolate(mode="bilinear", align_corners=False)`.

  Half-pixel centres, edge pixels repeated, no antialiasing (2-tap triangle filter also when
  downsampling), as pytorch-fid resizes.
  """
  if tuple(x.shape[1:3]) == tuple(size):
    return x
  return jax.image.resize(x, (x.shape[0], *size, x.shape[3]), "bilinear", antialias=False)


class InceptionV3(nn.Module):
  """pytorch-fid's FID Inception-v3: images [N, H, W, 1|3] in [-1, 1] -> (pool3 [N, 2048],
  logits [N, 1008])."""

  @nn.compact
  def __call__(self, x):
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
      raise ValueError(f"InceptionV3 takes images [N, H, W, 1 or 3], got shape {x.shape}.")
    x = resize_bilinear(x.astype(jnp.float32), (INPUT_SIZE, INPUT_SIZE))
    if x.shape[-1] == 1:
      x = jnp.repeat(x, 3, axis=-1)
    x = BasicConv2d(32, 3, stride=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv2d(32, 3, name="Conv2d_2a_3x3")(x)
    x = BasicConv2d(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_s2(x)
    x = BasicConv2d(80, 1, name="Conv2d_3b_1x1")(x)
    x = BasicConv2d(192, 3, name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_s2(x)
    x = FIDInceptionA(32, name="Mixed_5b")(x)
    x = FIDInceptionA(64, name="Mixed_5c")(x)
    x = FIDInceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = FIDInceptionC(c7, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = FIDInceptionE("avg", name="Mixed_7b")(x)
    x = FIDInceptionE("max", name="Mixed_7c")(x)
    pool3 = jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d((1, 1)).
    logits = nn.Dense(NUM_CLASSES, precision=HIGHEST, name="fc")(pool3)
    return pool3, logits


# Flax leaf (collection, last module, name) -> torch state_dict suffix.
_TORCH_SUFFIX = {("params", "conv", "kernel"): "weight", ("params", "bn", "scale"): "weight",
                 ("params", "bn", "bias"): "bias", ("batch_stats", "bn", "mean"): "running_mean",
                 ("batch_stats", "bn", "var"): "running_var", ("params", "fc", "kernel"): "weight",
                 ("params", "fc", "bias"): "bias"}


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  """Flax shape -> torch's: HWIO -> OIHW for convs, [in, out] -> [out, in] for fc."""
  return tuple(shape[i] for i in {4: (3, 2, 0, 1), 2: (1, 0), 1: (0,)}[len(shape)])


def _from_torch_layout(a: np.ndarray) -> np.ndarray:
  return np.transpose(a, {4: (2, 3, 1, 0), 2: (1, 0), 1: (0,)}[a.ndim])


@functools.lru_cache(maxsize=None)
def _flax_shapes() -> dict[tuple[str, ...], tuple[int, ...]]:
  shapes = jax.eval_shape(InceptionV3().init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}


def _torch_name(path: tuple[str, ...]) -> str:
  return ".".join(path[1:-1] + (_TORCH_SUFFIX[(path[0], path[-2], path[-1])],))


def torch_state_shapes() -> dict[str, tuple[int, ...]]:
  """pytorch-fid state_dict name -> shape in torch layout, for every weight the module needs.

  (`*.bn.num_batches_tracked`, a training counter, is not needed and ignored if present.)
  """
  return {_torch_name(p): _torch_shape(s) for p, s in _flax_shapes().items()}


def variables_from_state_dict(state: dict[str, np.ndarray], source: str = "state dict") -> dict:
  """pytorch-fid state_dict (name -> torch-layout array) -> flax {'params', 'batch_stats'}.

  Every needed name must be there with its torch shape; anything else but `num_batches_tracked`
  is an error (a different network's weights). Errors are one-line ValueErrors.
  """
  flat = {}
  for path, shape in _flax_shapes().items():
    name = _torch_name(path)
    expected = _torch_shape(shape)
    if name not in state:
      raise ValueError(f"{source}: missing weight {name!r} (expected shape {expected}); is this "
                       f"pytorch-fid's FID Inception ({WEIGHTS_URL.rsplit('/', 1)[-1]})?")
    a = np.asarray(state[name])
    if tuple(a.shape) != expected:
      raise ValueError(f"{source}: weight {name!r} has shape {tuple(a.shape)}, expected {expected} "
                       f"(torch layout{', OIHW' if a.ndim == 4 else ''}).")
    if not np.issubdtype(a.dtype, np.floating):
      raise ValueError(f"{source}: weight {name!r} has dtype {a.dtype}, expected floating point.")
    flat[path] = jnp.asarray(_from_torch_layout(a.astype(np.float32)))
  names = {_torch_name(p) for p in flat}
  extra = sorted(k for k in state if k not in names and not k.endswith(".num_batches_tracked"))
  if extra:
    raise ValueError(f"{source}: {len(extra)} unexpected weight(s), e.g. {extra[0]!r}; expected "
                     f"exactly pytorch-fid's FID Inception state_dict names.")
  return traverse_util.unflatten_dict(flat)


def _missing_weights_message(path) -> str:
  where = f"FID Inception weights {path!r} not found" if path else "no FID Inception weights given"
  return (f"{where}: download {WEIGHTS_URL} and convert it to .npz with `{CONVERT_CMD}`, "
          f"then pass the .npz path.")


def load_fid_inception_variables(path: str) -> dict:
  """Flax variables {'params', 'batch_stats'} of `InceptionV3` from a converted pytorch-fid .npz.

  The .npz keys are the torch state_dict names (`Conv2d_1a_3x3.conv.weight`,
  `Mixed_5b.branch1x1.bn.running_var`, `fc.bias`, ...), arrays in torch layout (conv OIHW,
  fc [out, in]); they are checked against `torch_state_shapes()` and transposed to HWIO / [in, out].
  """
  if not path or not os.path.isfile(path):
    raise ValueError(_missing_weights_message(path))
  try:
    with np.load(path, allow_pickle=False) as f:
      state = {k: f[k] for k in f.files}
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"cannot read {path!r} as .npz ({type(e).__name__}); convert the .pth with "
                     f"`{CONVERT_CMD}`.") from e
  return variables_from_state_dict(state, source=str(path))
