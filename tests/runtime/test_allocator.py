"""`python -m ddpm.main` re-executes itself under tcmalloc on CPU: when, with what, and only once."""

import os
import pathlib
import subprocess
import sys
import types

import pytest
from hypothesis import given, strategies as st

from ddpm.runtime import allocator, xla_flags

REPO = pathlib.Path(__file__).resolve().parents[2]
LIB = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"

_values = st.sampled_from(["", "0", "1", "yes"])
_environs = st.fixed_dictionaries({}, optional={
    "DDPM_NO_TCMALLOC": _values, "DDPM_NO_XLA_CPU_FLAGS": _values,
    "DDPM_TCMALLOC_REEXEC": _values,
    "JAX_PLATFORMS": st.sampled_from(["", "cpu", " cpu ", "tpu", "cuda", "cuda,cpu"]),
    "LD_PRELOAD": st.sampled_from(["", " ", "/opt/libasan.so", "/opt/a.so:/opt/b.so"]),
    "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": st.just("123"), "HOME": st.just("/home/u")})


@given(_environs, st.booleans())
def test_preload_env_keeps_the_users_environment_and_marks_the_child_so_it_never_loops(environ,
                                                                                      accel):
  env = allocator.preload_env(environ, LIB, "linux", accel)
  if env is None:
    return
  assert env["LD_PRELOAD"] == LIB and env["DDPM_TCMALLOC_REEXEC"] == "1"
  # Everything the user set is passed on unchanged (their report threshold included).
  assert {k: env[k] for k in environ if k not in ("LD_PRELOAD", "DDPM_TCMALLOC_REEXEC")} == {
      k: v for k, v in environ.items() if k not in ("LD_PRELOAD", "DDPM_TCMALLOC_REEXEC")}
  # The child, even with the preload stripped by something in between, never re-executes.
  assert allocator.preload_env({**env, "LD_PRELOAD": ""}, LIB, "linux", accel) is None
  assert allocator.preload_env(env, LIB, "linux", accel) is None


@given(_environs, st.booleans())
def test_each_condition_alone_stops_the_reexecution(environ, accel):
  """From an environment where it applies, any one opt-out, a preload of the user's, another
  platform, a missing library or an accelerator without JAX_PLATFORMS=cpu turns it off."""
  base = {k: v for k, v in environ.items() if k in ("HOME", "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD")}
  assert allocator.preload_env(base, LIB, "linux", False) is not None
  assert allocator.preload_env({**base, "JAX_PLATFORMS": "cpu"}, LIB, "linux", True) is not None
  for change in ({"DDPM_NO_TCMALLOC": "1"}, {"DDPM_NO_XLA_CPU_FLAGS": "yes"},
                 {"DDPM_TCMALLOC_REEXEC": "1"}, {"LD_PRELOAD": "/opt/libasan.so"},
                 {"JAX_PLATFORMS": "tpu"}, {"JAX_PLATFORMS": "cuda"}):
    assert allocator.preload_env({**base, **change}, LIB, "linux", False) is None, change
  assert allocator.preload_env(base, None, "linux", False) is None
  assert allocator.preload_env(base, LIB, "darwin", False) is None
  assert allocator.preload_env(base, LIB, "linux", True) is None
  assert allocator.preload_env({**base, "JAX_PLATFORMS": "cuda,cpu"}, LIB, "linux", True) is None
  for k in ("DDPM_NO_TCMALLOC", "DDPM_NO_XLA_CPU_FLAGS"):  # "" and "0" are not an opt-out.
    assert allocator.preload_env({**base, k: "0"}, LIB, "linux", False) is not None


def test_only_the_command_line_itself_is_reexecuted():
  as_module = types.SimpleNamespace(__spec__=types.SimpleNamespace(name="ddpm.main"))
  script = types.SimpleNamespace(__spec__=None)
  main_py = "/site/ddpm/main.py"
  yes = [(as_module, [main_py, "--mode=sample"], ["python", "-u", "-m", "ddpm.main", "--mode=sample"]),
         (as_module, [main_py], ["python", "-m", "ddpm.main"]),
         (script, ["/v/bin/ddpm", "sample"], ["/v/bin/python", "/v/bin/ddpm", "sample"])]
  no = [(as_module, [main_py, "--mode=train"], ["python", "-m", "ddpm.main", "--mode=sample"]),
        (script, ["-c", "--x"], ["python", "-c", "from ddpm import main; main.run()", "--x"]),
        (script, ["-"], ["python", "-"]),
        (script, ["/x/ipykernel_launcher.py", "-f", "k.json"],
         ["python", "-m", "ipykernel_launcher", "-f", "k.json"]),
        (script, ["/v/bin/ddpm", "sample"], ["/v/bin/python", "/v/bin/other", "sample"]),
        (as_module, [main_py], ["python"])]
  for module, argv, orig in yes:
    assert allocator.is_the_command_line(module, argv, orig), orig
    assert not allocator.is_the_command_line(module, argv, orig, inspect=True), orig
  for module, argv, orig in no:
    assert not allocator.is_the_command_line(module, argv, orig), orig


def test_running_allocator_reads_the_mapped_library(tmp_path):
  maps = tmp_path / "maps"
  maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/libc.so.6\n")
  assert allocator.running_allocator(str(maps)) is None
  maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/libc.so.6\n"
                  f"7f02-7f03 r-xp 0 08:01 2 {LIB}\n")
  assert allocator.running_allocator(str(maps)) == LIB
  assert allocator.running_allocator(str(tmp_path / "none")) is None


def test_find_tcmalloc_takes_the_preferred_name_in_the_first_directory(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  a.mkdir(), b.mkdir()
  names = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
  assert allocator.find_tcmalloc([str(a), str(b)], names) is None
  (b / "libtcmalloc.so.4").write_bytes(b"")
  assert allocator.find_tcmalloc([str(a), str(b)], names) == str(b / "libtcmalloc.so.4")
  (b / "libtcmalloc_minimal.so.4").write_bytes(b"")
  (a / "libtcmalloc_minimal.so.4").write_bytes(b"")
  assert allocator.find_tcmalloc([str(a), str(b)], names) == str(a / "libtcmalloc_minimal.so.4")


def test_reexec_replaces_the_process_with_the_same_command_or_says_what_is_missing(monkeypatch):
  calls = []

  def fake_execve(path, argv, env):
    calls.append((path, argv, env))
    raise SystemExit(0)

  for k in ("DDPM_NO_TCMALLOC", "DDPM_NO_XLA_CPU_FLAGS", "DDPM_TCMALLOC_REEXEC", "LD_PRELOAD",
            "JAX_PLATFORMS"):
    monkeypatch.delenv(k, raising=False)
  monkeypatch.setattr(os, "execve", fake_execve)
  monkeypatch.setattr(sys, "platform", "linux")
  monkeypatch.setattr(sys, "argv", ["/site/ddpm/main.py", "--mode=x"])
  monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-u", "-m", "ddpm.main", "--mode=x"])
  monkeypatch.setitem(sys.modules, "__main__",
                      types.SimpleNamespace(__spec__=types.SimpleNamespace(name="ddpm.main")))
  monkeypatch.setattr(xla_flags, "accelerator_installed", lambda: False)
  monkeypatch.setattr(allocator, "find_tcmalloc", lambda: LIB)
  with pytest.raises(SystemExit):
    allocator.reexec_under_tcmalloc()
  (path, argv, env), = calls
  assert path == sys.executable and argv == [sys.executable, "-u", "-m", "ddpm.main", "--mode=x"]
  assert env["LD_PRELOAD"] == LIB and env["DDPM_TCMALLOC_REEXEC"] == "1"

  def failing_execve(path, argv, env):
    raise PermissionError(13, "Permission denied")

  monkeypatch.setattr(os, "execve", failing_execve)  # The exec fails: go on, say so.
  assert "running with glibc's malloc" in allocator.reexec_under_tcmalloc()
  # No library: no re-execution, one line saying what it would give and how to get it.
  monkeypatch.setattr(os, "execve", fake_execve)
  monkeypatch.setattr(allocator, "find_tcmalloc", lambda: None)
  note = allocator.reexec_under_tcmalloc()
  assert "apt install libtcmalloc-minimal4" in note and "DDPM_NO_TCMALLOC=1" in note
  monkeypatch.setenv("DDPM_NO_TCMALLOC", "1")  # Opted out: silent.
  assert allocator.reexec_under_tcmalloc() is None and len(calls) == 1


@pytest.mark.skipif(allocator.find_tcmalloc() is None or not sys.platform.startswith("linux"),
                    reason="no tcmalloc on this machine (apt install libtcmalloc-minimal4)")
@pytest.mark.parametrize("opt_out", [False, True])
def test_the_command_line_runs_under_tcmalloc_unless_opted_out(tmp_path, opt_out):
  env = {k: v for k, v in os.environ.items() if k not in ("DDPM_NO_TCMALLOC", "LD_PRELOAD",
                                                          "DDPM_TCMALLOC_REEXEC")}
  if opt_out:
    env["DDPM_NO_TCMALLOC"] = "1"
  (tmp_path / "empty").mkdir()
  r = subprocess.run([sys.executable, "-m", "ddpm.main", "--config=configs/tiny.py",
                      f"--workdir={tmp_path / 'empty'}", "--mode=sample"], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode != 0 and "no checkpoints/ directory" in r.stderr, r.stderr[-2000:]
  assert ("Memory allocator: " in r.stderr) != opt_out, r.stderr[-2000:]
  if not opt_out:  # The library the log names is the one mapped into the process.
    assert "tcmalloc" in r.stderr.split("Memory allocator: ")[1].split()[0], r.stderr[-2000:]
