"""Launch settings of several processes and the global batch arithmetic (no JAX runtime)."""

import pytest
from hypothesis import given, strategies as st

from ddpm.runtime import distributed
from ddpm.runtime.distributed import Settings, resolve

ADDRESS = "10.0.0.1:1234"


@given(per_device=st.integers(1, 64), local=st.integers(1, 8), processes=st.integers(1, 8))
def test_global_batch_is_per_device_batch_times_all_devices(per_device, local, processes):
  devices = local * processes
  b, per_process = distributed.batch_split(per_device * devices, devices, local, processes)
  assert b == per_device and per_process == per_device * local
  assert per_process * processes == per_device * devices  # The processes' batches add up.


@given(batch=st.integers(-5, 500), local=st.integers(1, 8), processes=st.integers(1, 4))
def test_a_batch_that_does_not_split_over_all_devices_is_rejected(batch, local, processes):
  devices = local * processes
  if batch >= 1 and batch % devices == 0:
    assert distributed.batch_split(batch, devices, local, processes)[0] == batch // devices
  else:
    with pytest.raises(ValueError, match=f"batch_size={batch} must be a positive multiple of "
                                         f"the device count {devices}") as e:
      distributed.batch_split(batch, devices, local, processes)
    assert "\n" not in str(e.value)


def test_processes_with_different_device_counts_are_rejected():
  with pytest.raises(ValueError, match="7 devices over 2 processes with 4 local devices"):
    distributed.batch_split(28, 7, 4, 2)


@given(n=st.integers(2, 64), data=st.data())
def test_flags_come_first_then_the_environment(n, data):
  i, j = data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, n - 1))
  env = {"JAX_COORDINATOR_ADDRESS": "10.9.9.9:99", "JAX_NUM_PROCESSES": str(n),
         "JAX_PROCESS_ID": str(j)}
  assert resolve("auto", environ=env) == Settings("10.9.9.9:99", n, j)
  assert resolve("auto", ADDRESS, n, i, environ=env) == Settings(ADDRESS, n, i)
  assert resolve("auto", None, None, i, environ=env) == Settings("10.9.9.9:99", n, i)
  assert resolve("off", ADDRESS, n, i, environ=env) is None


@pytest.mark.parametrize("n", [None, 1])
def test_one_process_initializes_nothing(n):
  assert resolve("auto", ADDRESS, n, 0, environ={}) is None
  assert resolve("auto", environ={}) is None


def test_cluster_mode_leaves_what_is_unset_to_jax_detection():
  assert resolve("cluster", environ={}) == Settings(None, None, None)
  assert resolve("cluster", None, 4, environ={"JAX_PROCESS_ID": "3"}) == Settings(None, 4, 3)


@pytest.mark.parametrize("args,env,message", [
    ((ADDRESS, 2, None), {}, "--num_processes=2 needs --process_id"),
    ((None, 2, 1), {}, "--num_processes=2 needs --coordinator_address"),
    ((ADDRESS, 2, 2), {}, r"--process_id=2 is out of range; allowed: 0..1"),
    ((ADDRESS, 2, -1), {}, r"--process_id=-1 is out of range"),
    ((ADDRESS, 0, None), {}, "--num_processes=0 must be >= 1"),
    (("10.0.0.1", 2, 0), {}, "--coordinator_address='10.0.0.1' is not host:port"),
    ((None, None, None), {"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two' is not an integer"),
])
def test_bad_settings_stop_with_one_line(args, env, message):
  with pytest.raises(ValueError, match=message) as e:
    resolve("auto", *args, environ=env)
  assert "\n" not in str(e.value)


def test_an_unknown_mode_is_rejected():
  with pytest.raises(ValueError, match="--distributed='mpi' is unknown; allowed: auto, cluster, off"):
    resolve("mpi", environ={})
