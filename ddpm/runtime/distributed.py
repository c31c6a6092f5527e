"""One code path from one CPU to a multi-host pod: JAX's distributed runtime, set up at launch.

A run is P processes (P = 1: a laptop, a GPU box, one TPU VM, a Colab TPU) that each drive
their local devices. With P > 1, `jax.distributed.initialize` must run in every process before
any other JAX call; afterwards `jax.pmap` spans the devices of all processes, each process feeds
its local devices, and collectives (the gradient `pmean`) cross processes (on TPU over ICI/DCN,
on GPU over NCCL, on CPU over gloo, JAX's default CPU collectives).

Where the settings come from, in this order:
  1. the flags --coordinator_address, --num_processes, --process_id;
  2. the environment: JAX_COORDINATOR_ADDRESS (read by JAX itself, too), JAX_NUM_PROCESSES,
     JAX_PROCESS_ID;
  3. --distributed=cluster: JAX's own detection (Cloud TPU VMs and pod slices, SLURM, Open MPI,
     Kubernetes) fills in whatever 1 and 2 left unset.
Without --distributed=cluster, a run with no process count, or a count of 1, stays a single
process and nothing is initialized; --distributed=off never initializes.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

from absl import flags, logging

MODES = ("auto", "cluster", "off")

ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}


@dataclasses.dataclass(frozen=True)
class Settings:
  """What to pass to jax.distributed.initialize; None fields are left to JAX's detection."""
  coordinator_address: str | None
  num_processes: int | None
  process_id: int | None


def _env_int(environ: Mapping[str, str], key: str) -> int | None:
  value = environ.get(ENV[key])
  if value is None or value == "":
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{ENV[key]}={value!r} is not an integer; allowed: an integer "
                     f"(or unset).") from None


def resolve(mode: str = "auto", coordinator_address: str | None = None,
            num_processes: int | None = None, process_id: int | None = None,
            environ: Mapping[str, str] | None = None) -> Settings | None:
  """The settings of jax.distributed.initialize, or None for a single process (no-op).

  Each of (coordinator_address, num_processes, process_id) is the flag's value if given, else
  the environment's (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID). mode "off":
  None. "cluster": the resolved values, unset ones left to JAX's cluster detection. "auto":
  None unless num_processes > 1, and then all three are required, with
  0 <= process_id < num_processes and an address of the form host:port.
  Raises ValueError with a one-line message naming the bad value and what is allowed.
  """
  if mode not in MODES:
    raise ValueError(f"--distributed={mode!r} is unknown; allowed: {', '.join(MODES)}.")
  environ = os.environ if environ is None else environ
  if coordinator_address is None:
    coordinator_address = environ.get(ENV["coordinator_address"]) or None
  if num_processes is None:
    num_processes = _env_int(environ, "num_processes")
  if process_id is None:
    process_id = _env_int(environ, "process_id")
  if mode == "off":
    return None
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"--num_processes={num_processes} must be >= 1.")
  if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
    raise ValueError(f"--process_id={process_id} is out of range; allowed: 0..{num_processes - 1} "
                     f"for --num_processes={num_processes}.")
  if coordinator_address is not None and not _is_host_port(coordinator_address):
    raise ValueError(f"--coordinator_address={coordinator_address!r} is not host:port; allowed: "
                     f"e.g. 10.0.0.1:1234 or 127.0.0.1:1234 (process 0's host).")
  if mode == "cluster":
    return Settings(coordinator_address, num_processes, process_id)
  if num_processes is None or num_processes == 1:
    return None
  if process_id is None:
    raise ValueError(f"--num_processes={num_processes} needs --process_id (or JAX_PROCESS_ID); "
                     f"allowed: 0..{num_processes - 1}, a different one in every process.")
  if coordinator_address is None:
    raise ValueError(f"--num_processes={num_processes} needs --coordinator_address (or "
                     f"JAX_COORDINATOR_ADDRESS): host:port of process 0, e.g. 10.0.0.1:1234.")
  return Settings(coordinator_address, num_processes, process_id)


def _is_host_port(address: str) -> bool:
  host, sep, port = address.rpartition(":")
  return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def initialize(settings: Settings | None) -> bool:
  """Calls jax.distributed.initialize(settings) unless `settings` is None; returns whether it
  did. Must run before any other JAX call (devices, arrays) in the process."""
  if settings is None:
    return False
  import jax  # pylint: disable=g-import-not-at-top
  logging.info("Initializing JAX's distributed runtime: coordinator %s, process %s of %s.",
               settings.coordinator_address or "(detected)", settings.process_id,
               settings.num_processes or "(detected)")
  jax.distributed.initialize(coordinator_address=settings.coordinator_address,
                             num_processes=settings.num_processes,
                             process_id=settings.process_id)
  logging.info("JAX process %d of %d: %d local and %d global devices.", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  if jax.process_count() > 1:
    use_coordination_service_barriers()
    check_collectives()
  return True


def check_collectives() -> None:
  """Runs one psum over every device of every process right away and checks it counts them.

  Besides checking that collectives span all processes, this sets up the communicators while
  the processes are still in step (they just met in jax.distributed.initialize): CPU gloo gives
  the processes 30 s to meet when it first connects them, which a later first collective (after
  compiles of different lengths) can miss; once connected, a late process is waited for.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  ones = np.ones((jax.local_device_count(),), np.int32)
  total = np.asarray(jax.pmap(lambda x: jax.lax.psum(x, "devices"), axis_name="devices")(ones))
  if not np.all(total == jax.device_count()):
    raise RuntimeError(f"a psum over all {jax.device_count()} devices of {jax.process_count()} "
                       f"processes counted {total.tolist()}; the processes do not form one run.")


def use_coordination_service_barriers() -> None:
  """Makes orbax synchronize processes through the coordination service, not device programs.

  By default orbax's barriers are tiny all-device programs (sync_global_devices), some issued
  from its background checkpoint threads, so processes may enqueue them in different orders
  relative to the training loop's programs and then wait on each other for good (a first
  2-process CPU run here, with these defaults, hung at its end until the coordination service
  gave up). The coordination service's barriers (orbax's
  --experimental_orbax_use_distributed_barrier) involve no device and time out with an error.
  """
  import orbax.checkpoint  # pylint: disable=g-import-not-at-top,unused-import  # Defines the flag.
  flags.FLAGS["experimental_orbax_use_distributed_barrier"].value = True


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines --distributed, --coordinator_address, --num_processes and --process_id."""
  flags.DEFINE_enum(
      "distributed", "auto", MODES,
      "auto: initialize JAX's distributed runtime when --num_processes (or JAX_NUM_PROCESSES) "
      "is > 1; cluster: always, letting JAX detect what is unset (Cloud TPU pod slices, SLURM, "
      "Open MPI); off: never (a single process).", flag_values=flag_values)
  flags.DEFINE_string(
      "coordinator_address", None,
      "host:port of process 0's coordinator service, reachable from every process "
      "(default: $JAX_COORDINATOR_ADDRESS).", flag_values=flag_values)
  flags.DEFINE_integer(
      "num_processes", None,
      "Number of processes of the run (default: $JAX_NUM_PROCESSES, else 1).",
      flag_values=flag_values)
  flags.DEFINE_integer(
      "process_id", None,
      "This process's index in 0..num_processes-1 (default: $JAX_PROCESS_ID).",
      flag_values=flag_values)


def initialize_from_flags_or_env(flag_values: flags.FlagValues = flags.FLAGS) -> bool:
  """`initialize(resolve(...))` from the flags of `define_flags` and the environment."""
  f = flag_values
  return initialize(resolve(f.distributed, f.coordinator_address, f.num_processes, f.process_id))


_barriers = [0]  # Barrier ids must be unique: a counter, the same in every process.


def barrier(name: str, timeout_s: int = 1800) -> None:
  """Waits until every process has reached barrier(name) (the coordination service's barrier,
  as orbax's: no device program, so no collective timeout); a no-op with one process. Every
  process must call the same barriers in the same order."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return
  _barriers[0] += 1
  jax_distributed.global_state.client.wait_at_barrier(f"ddpm_{name}_{_barriers[0]}",
                                                      timeout_s * 1000)


def share_from_main(name: str, value: str | None = None, timeout_s: int = 1800) -> str:
  """Process 0's `value` on every process (through the coordination service's key-value store,
  no device program); returns `value` itself with one process. Every process must call it
  with the same `name` in the same order; only process 0's `value` is used."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return value
  _barriers[0] += 1
  key = f"ddpm_{name}_{_barriers[0]}"
  client = jax_distributed.global_state.client
  if jax.process_index() == 0:
    client.key_value_set(key, value)
    return value
  return client.blocking_key_value_get(key, timeout_s * 1000)


def is_main_process() -> bool:
  """Whether this process writes the run's files (logs, images, config): process 0 only."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index() == 0


def batch_split(global_batch: int, device_count: int, local_device_count: int,
                process_count: int) -> tuple[int, int]:
  """(per-device batch b, per-process batch) for a global batch B over D devices.

  B = b * D, and each of the P processes feeds its D / P local devices b examples each:
  per-process batch = b * D_local = B / P. Raises ValueError (one line) unless B is a positive
  multiple of D and every process has D_local = D / P devices.
  """
  if device_count != local_device_count * process_count:
    raise ValueError(f"{device_count} devices over {process_count} processes with "
                     f"{local_device_count} local devices each do not add up; allowed: the same "
                     f"number of devices in every process.")
  if global_batch < 1 or global_batch % device_count:
    raise ValueError(
        f"config.training.batch_size={global_batch} must be a positive multiple of the device "
        f"count {device_count} ({process_count} process(es) x {local_device_count} local "
        f"devices): global batch = per-device batch x device count.")
  per_device = global_batch // device_count
  return per_device, per_device * local_device_count
