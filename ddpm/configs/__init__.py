"""The built-in configs, shipped inside the package: `--config=<name>` (or `ddpm.configs.get(name)`)
works wherever ddpm is installed, and the repository's `configs/<name>.py` name the same files.

  default                the DDPM paper's CIFAR-10 hyperparameters; every key a run can set
  cifar10                CIFAR-10 (Ho et al. 2020), an accelerator config (35.7 M parameters)
  mnist                  MNIST, 0.97 M parameters, the README's CPU run
  mnist_conditional      class-conditional MNIST with classifier-free guidance
  fashion_mnist          Fashion-MNIST with the MNIST recipe
  fashion_mnist_finetune fine-tuning the conditional MNIST model on Fashion-MNIST, layers frozen
  folder                 a folder of your own RGB images at 32x32 (data.data_dir=PATH)
  folder64               the same at 64x64, sized for a CPU smoke run
  tiny                   16x16 MNIST, a tiny U-Net: tests and smoke runs
  benchmark              the U-Net matched with diffusers in experiments/benchmark

A config file is a module with `get_config()` returning an `ml_collections.ConfigDict`.
"""

from __future__ import annotations

import importlib
import os

DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def names() -> tuple[str, ...]:
  """The built-in config names (the modules of this package that define get_config)."""
  return tuple(sorted(n[:-3] for n in os.listdir(DIRECTORY)
                      if n.endswith(".py") and not n.startswith("_")))


def path(name: str) -> str:
  """The file of the built-in config `name`; one-line ValueError naming the allowed names."""
  if name not in names():
    raise ValueError(f"--config={name}: no such file or built-in config; allowed: a config file "
                     f"path or one of {', '.join(names())}.")
  return os.path.join(DIRECTORY, name + ".py")


def get(name: str):
  """The ConfigDict of the built-in config `name`."""
  path(name)  # The error for an unknown name.
  return importlib.import_module(f"ddpm.configs.{name}").get_config()


def resolve(spec: str) -> str:
  """A --config argument with a built-in name replaced by its file: `mnist` -> .../mnist.py,
  `mnist:ARG` -> .../mnist.py:ARG; an existing path (or a spelling that is neither) unchanged."""
  base = spec.split(":", 1)[0]
  # A directory named like a built-in (a workdir called `mnist`) does not hide it.
  if os.path.isfile(base) or os.path.isfile(spec) or os.sep in base or base.endswith(".py"):
    return spec
  if base in names():
    return path(base) + spec[len(base):]
  return spec
