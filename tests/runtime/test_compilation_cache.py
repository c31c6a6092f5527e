"""The command line's persistent XLA compilation cache: where it goes, when it is off, and that a
second process loads what the first compiled."""

import os
import pathlib
import subprocess
import sys

import pytest
from hypothesis import given, strategies as st

from ddpm.runtime import compilation_cache

REPO = pathlib.Path(__file__).resolve().parents[2]
_flags = st.lists(st.sampled_from(["fpu", "sse2", "avx", "avx2", "fma", "avx512f", "neon"]),
                  min_size=1, max_size=7)


@given(_flags, _flags, st.randoms(use_true_random=False))
def test_isa_tag_depends_on_the_cpu_model_and_the_set_of_its_flags_only(a, b, rnd):
  shuffled = list(a) + list(a)
  rnd.shuffle(shuffled)
  tag = lambda flags, key="flags", model="X": compilation_cache.isa_tag(
      "x86_64", f"processor\t: 0\nmodel name\t: {model}\n{key}\t\t: {' '.join(flags)}\n\n"
      f"processor\t: 1\nmodel name\t: Y\n{key} : zz\n")
  assert tag(a) == tag(shuffled)  # Order and repeats do not matter; the first lines count.
  assert (tag(a) == tag(b)) == (set(a) == set(b))
  assert tag(a, model="Z") != tag(a)
  assert tag(a, "Features").startswith("x86_64-") and tag(a, "Features") == tag(a)
  assert compilation_cache.isa_tag("arm64", "no flags here") == "arm64"


@given(st.sampled_from(["0", "off", " OFF ", "False", "no"]))
def test_off_and_jaxs_own_setting_give_no_folder(off):
  assert compilation_cache.cache_dir({"DDPM_COMPILATION_CACHE": off}, "/h", "t") is None
  assert compilation_cache.cache_dir({"DDPM_COMPILATION_CACHE": off,
                                      "JAX_COMPILATION_CACHE_DIR": "/j"}, "/h", "t") is None
  for on in ("", "1", " On ", "true", "yes"):
    env = {"DDPM_COMPILATION_CACHE": on, "JAX_COMPILATION_CACHE_DIR": "/j"}
    assert compilation_cache.cache_dir(env, "/h", "t") is None  # JAX's own setting applies.


def test_the_folder_is_absolute_and_per_cpu_under_the_chosen_root():
  cache_dir = compilation_cache.cache_dir
  assert cache_dir({}, "/home/u", "x86_64-ab") == "/home/u/.cache/ddpm/xla/x86_64-ab"
  for on in ("1", "on", "TRUE", "yes", " "):
    assert cache_dir({"DDPM_COMPILATION_CACHE": on}, "/h", "t") == "/h/.cache/ddpm/xla/t"
  assert cache_dir({"XDG_CACHE_HOME": "/xdg"}, "/home/u", "t") == "/xdg/ddpm/xla/t"
  assert cache_dir({"XDG_CACHE_HOME": "rel"}, "/home/u", "t") == "/home/u/.cache/ddpm/xla/t"
  assert cache_dir({"DDPM_COMPILATION_CACHE": "/c", "XDG_CACHE_HOME": "/xdg",
                    "JAX_COMPILATION_CACHE_DIR": "/j"}, "/h", "t") == "/c/t"
  assert cache_dir({"DDPM_COMPILATION_CACHE": "c/d", "PWD": "/work"}, "/h", "t") == "/work/c/d/t"
  assert cache_dir({"DDPM_COMPILATION_CACHE": " ", "JAX_COMPILATION_CACHE_DIR": " "}, "/h",
                   "t") == "/h/.cache/ddpm/xla/t"


_PROBE = """
import logging, sys
logging.basicConfig(level=logging.WARNING)
logging.getLogger("jax._src.compiler").setLevel(logging.DEBUG)
from ddpm.runtime import compilation_cache
print(compilation_cache.enable(), flush=True)
import jax, jax.numpy as jnp
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
print("enabled:", jax.config.jax_enable_compilation_cache, "dir:", jax.config.jax_compilation_cache_dir)
def probe(x):
  return jnp.sum(jnp.sin(x) @ x.T)
print(float(jax.jit(probe)(jnp.ones((8, 8)))), flush=True)
"""


def _probe(env):
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"} | env
  out = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout, out.stderr


def test_a_second_process_loads_what_the_first_compiled_and_0_turns_it_off(tmp_path):
  tag = compilation_cache.host_isa_tag()
  first, log1 = _probe({"DDPM_COMPILATION_CACHE": str(tmp_path)})
  assert f"XLA compilation cache: {tmp_path / tag} (DDPM_COMPILATION_CACHE=0" in first
  assert f"dir: {tmp_path / tag}" in first and "cache hit" not in log1
  entries = sorted(p.name for p in (tmp_path / tag).iterdir())
  assert any(name.startswith("jit_probe-") for name in entries), entries
  second, log2 = _probe({"DDPM_COMPILATION_CACHE": str(tmp_path)})
  if "Target machine feature" in log2:
    pytest.skip("jaxlib's CPU loader refuses its own cache entries on this CPU (jax#38445)")
  assert "Persistent compilation cache hit for 'jit_probe'" in log2, log2[-2000:]
  assert second.splitlines()[-1] == first.splitlines()[-1]  # The same result, loaded.
  assert sorted(p.name for p in (tmp_path / tag).iterdir()) == entries
  off, log3 = _probe({"DDPM_COMPILATION_CACHE": "0",
                      "JAX_COMPILATION_CACHE_DIR": str(tmp_path / tag)})  # Holds the entry.
  assert "XLA compilation cache: off (DDPM_COMPILATION_CACHE=0)" in off
  assert "enabled: False" in off and "cache hit" not in log3
