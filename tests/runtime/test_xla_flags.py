"""ddpm's default XLA CPU flags: when they are added, that a user's own flags win, and that a
convolution compiled with them (YNNPACK) equals the one without (Eigen)."""

import json
import logging
import os
import subprocess
import sys
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ddpm.runtime import xla_flags

FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot"


def test_added_to_empty_and_to_other_flags():
  assert xla_flags.cpu_flags_to_add({}, accelerator_installed=False) == [FLAG]
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  assert xla_flags.cpu_flags_to_add(env, accelerator_installed=False) == [FLAG]


def test_user_value_opt_out_and_platforms_respected():
  # The user's own value of the flag, even a different one, is never overridden.
  env = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise"}
  assert xla_flags.cpu_flags_to_add(env, accelerator_installed=False) == []
  assert xla_flags.cpu_flags_to_add({"DDPM_NO_XLA_CPU_FLAGS": "1"}, False) == []
  assert xla_flags.cpu_flags_to_add({"DDPM_NO_XLA_CPU_FLAGS": "0"}, False) == [FLAG]
  assert xla_flags.cpu_flags_to_add({"JAX_PLATFORMS": "tpu"}, False) == []
  assert xla_flags.cpu_flags_to_add({"JAX_PLATFORMS": "cuda,cpu"}, False) == [FLAG]
  # With a TPU/GPU plugin installed, only an explicit CPU-only JAX gets the flag.
  assert xla_flags.cpu_flags_to_add({}, accelerator_installed=True) == []
  assert xla_flags.cpu_flags_to_add({"JAX_PLATFORMS": "cpu"}, True) == [FLAG]


def test_add_appends_once_and_not_after_jax_started(monkeypatch, caplog):
  monkeypatch.setattr(xla_flags, "accelerator_installed", lambda: False)
  monkeypatch.setattr(xla_flags, "_backends_initialized", lambda: False)
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  assert xla_flags.add_default_cpu_flags(env) == [FLAG]
  assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=4 {FLAG}"
  assert xla_flags.add_default_cpu_flags(env) == []  # Idempotent.
  monkeypatch.setattr(xla_flags, "_backends_initialized", lambda: True)
  env = {}
  with caplog.at_level(logging.WARNING):
    assert xla_flags.add_default_cpu_flags(env) == []
  assert env == {} and "initialised before ddpm was imported" in caplog.text


_flag_names = st.from_regex(r"xla_[a-z_]{1,20}", fullmatch=True).filter(
    lambda n: n not in xla_flags.CPU_FLAGS)
_other_flags = st.lists(st.builds(lambda n, v: f"--{n}={v}", _flag_names,
                                  st.from_regex(r"[a-z0-9,]{1,8}", fullmatch=True)), max_size=4)


@given(other=_other_flags, users_value=st.none() | st.sampled_from(["dot", "dot,eltwise", ""]))
def test_add_keeps_every_user_flag_and_sets_the_flag_exactly_once(other, users_value):
  # Whatever XLA_FLAGS held stays, in order; ddpm's flag ends up in it exactly once (with the
  # user's own value if they gave one); adding again changes nothing.
  name = next(iter(xla_flags.CPU_FLAGS))
  before = other + ([] if users_value is None else [f"--{name}={users_value}"])
  env = {"XLA_FLAGS": " ".join(before)} if before else {}
  with mock.patch.object(xla_flags, "accelerator_installed", lambda: False), \
       mock.patch.object(xla_flags, "_backends_initialized", lambda: False):
    added = xla_flags.add_default_cpu_flags(env)
    after = env.get("XLA_FLAGS", "").split()
    assert after[:len(before)] == before
    assert sum(f.startswith(f"--{name}=") for f in after) == 1
    assert added == ([] if users_value is not None else [FLAG])
    assert xla_flags.add_default_cpu_flags(env) == [] and env.get("XLA_FLAGS", "").split() == after


_CONV = """
import json, os, ddpm, jax, numpy as np
k1, k2 = jax.random.split(jax.random.PRNGKey(0))
x = jax.random.normal(k1, (8, 16, 16, 32)); w = 0.1 * jax.random.normal(k2, (3, 3, 32, 64))
conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
y = jax.jit(conv)(x, w)
gx, gw = jax.jit(jax.grad(lambda x, w: (conv(x, w) ** 2).sum(), argnums=(0, 1)))(x, w)
print(json.dumps({"flags": os.environ.get("XLA_FLAGS", ""),
                  "y": np.asarray(y).ravel()[::97].tolist(),
                  "gx": np.asarray(gx).ravel()[::97].tolist(),
                  "gw": np.asarray(gw).ravel()[::97].tolist()}))
"""


@pytest.mark.skipif(xla_flags.accelerator_installed(), reason="flags only added on CPU hosts")
def test_convolution_with_flags_equals_without():
  import numpy as np
  out = {}
  for opt_out in ("0", "1"):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env["DDPM_NO_XLA_CPU_FLAGS"] = opt_out
    proc = subprocess.run([sys.executable, "-c", _CONV], env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    out[opt_out] = json.loads(proc.stdout.strip().splitlines()[-1])
  assert FLAG in out["0"]["flags"] and FLAG not in out["1"]["flags"]
  for name in ("y", "gx", "gw"):
    np.testing.assert_allclose(out["0"][name], out["1"][name], rtol=1e-4, atol=1e-4)
