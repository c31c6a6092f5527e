r"""Command line entry point: train, sample, evaluate, edit (inpaint, denoise/SDEdit), draw the
process, synthesize labelled data, score anomalies.

  python -m ddpm.main --config=configs/mnist.py --workdir=/tmp/mnist
  python -m ddpm.main --config=configs/mnist.py --workdir=/tmp/mnist --mode=sample \
      --config.sampling.method=ddim --config.sampling.num_steps=50 --config.sampling.seed=1
  python -m ddpm.main --config=configs/mnist.py --workdir=/tmp/mnist --mode=eval
  python -m ddpm.main --config=configs/mnist.py --workdir=/tmp/mnist --mode=inpaint \
      --config.edit.mask=bottom_half
  python -m ddpm.main --config=configs/mnist.py --workdir=/tmp/mnist --mode=process
  python -m ddpm.main --config=configs/mnist.py --workdir=/tmp/mnist --mode=denoise \
      --config.edit.noise_sigma=0.3
  python -m ddpm.main --config=configs/mnist.py --workdir=/tmp/mnist --mode=anomaly
  python -m ddpm.main --config=configs/mnist_conditional.py --workdir=/tmp/mnist_cond \
      --mode=synthesize --config.synthesize.num_per_class=500 --config.sampling.guidance_weight=1

Any config value can be overridden with --config.<group>.<key>=<value>. --config takes a file
or the name of a built-in config (`ddpm.configs`: --config=mnist is ddpm/configs/mnist.py), and
the installed console script `ddpm` is the same command, with the mode as an optional first word:

  ddpm --config=mnist --workdir=/tmp/mnist                 # train
  ddpm sample --config=mnist --workdir=/tmp/mnist          # = --mode=sample
  ddpm export --config=mnist --workdir=/tmp/mnist          # weights as one .safetensors file

Several processes (a multi-host TPU pod slice, several GPU hosts, or CPU processes) run the
same command, each with its own process id; see `ddpm.runtime.distributed`:

  python -m ddpm.main --config=configs/mnist.py --workdir=/shared/mnist \
      --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0   # 1 on the other
  python -m ddpm.main --config=configs/mnist.py --workdir=/shared/mnist --distributed=cluster

Each mode is a job of `ddpm.jobs` (`ddpm.jobs.setup_job`, also re-exported here for notebooks).
"""

import importlib.util
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ddpm import configs
from ddpm.runtime import allocator, compilation_cache, distributed, storage, xla_flags

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
# The keys of ddpm.jobs.JOBS, spelled out so that parsing flags imports no JAX (a test checks).
MODES = ("train", "sample", "eval", "inpaint", "process", "denoise", "synthesize", "anomaly",
         "export")
flags.DEFINE_enum("mode", "train", MODES,
                  "train (also fine-tuning: config.training.init_from/trainable); sample: draw "
                  "images (class-conditional: config.sampling.class_label/guidance_weight); "
                  "eval: FID/IS/precision/recall, bits/dim, denoising; inpaint: RePaint with "
                  "config.edit.mask; process: forward and reverse strips and GIFs; denoise: "
                  "denoising and SDEdit (config.edit); synthesize: labelled samples as .npz and a "
                  "TFDS dataset; anomaly: anomaly scores and AUROC (config.anomaly); export: the "
                  "weights and settings as one .safetensors file (config.export).")
config_flags.DEFINE_config_file(
    "config", None, "Configuration: a config file, or a built-in name (" +
    ", ".join(configs.names()) + ").", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()


def _one_line(record) -> None:
  """Makes a log record with a traceback one line: its message's first 300 characters."""
  if record.exc_info or record.exc_text:
    record.msg = record.getMessage().splitlines()[0][:300]
    record.args, record.exc_info, record.exc_text = (), None, None


class _OneLineErrors(logging.logging.Filter):
  """Keeps every record, without tracebacks (see `_one_line`)."""

  def filter(self, record):
    _one_line(record)
    return True


class _QuietOrbax(logging.logging.Filter):
  """Drops orbax's INFO chatter (a dozen lines per save); its warnings and errors stay, each as
  one line: the tracebacks of its background threads (e.g. every write thread's after a full
  disk) are dropped, since the save's caller reports the failure once (`ddpm.runtime.storage`)."""

  def filter(self, record):
    if "/orbax/" not in record.pathname:
      return True
    if record.levelno < logging.logging.WARNING:
      return False
    _one_line(record)
    return True


def _is_closed_loop_error(exc) -> bool:
  return type(exc) is RuntimeError and str(exc) == "Event loop is closed"


def _quiet_closed_loop_callbacks() -> None:
  """sys.excepthook and sys.unraisablehook without the 'Event loop is closed' tracebacks that
  TensorStore's write callbacks raise, one per pending write, when orbax's save loop has already
  stopped on an earlier write error (a full disk); every other exception is printed as before."""
  excepthook, unraisablehook = sys.excepthook, sys.unraisablehook
  if getattr(excepthook, "ddpm_quiet", False):
    return

  def quiet_excepthook(exc_type, exc, tb):
    if not _is_closed_loop_error(exc):
      excepthook(exc_type, exc, tb)

  def quiet_unraisablehook(unraisable):
    if not _is_closed_loop_error(unraisable.exc_value):
      unraisablehook(unraisable)

  quiet_excepthook.ddpm_quiet = True
  sys.excepthook, sys.unraisablehook = quiet_excepthook, quiet_unraisablehook


def quiet_logging() -> None:
  """INFO logs without TensorFlow's C++ chatter and orbax's per-save INFO lines."""
  # Keep TensorFlow (tf.data only) quiet; set before it is imported.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  logger = logging.get_absl_logger()
  if not any(isinstance(f, _QuietOrbax) for f in logger.filters):
    logger.addFilter(_QuietOrbax())
  # asyncio reports the write tasks of a failed orbax save ("Task exception was never
  # retrieved") with their tracebacks: one line each as well.
  asyncio_logger = logging.logging.getLogger("asyncio")
  if not any(isinstance(f, _OneLineErrors) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_OneLineErrors())
  _quiet_closed_loop_callbacks()


def _config_file_argument(argv) -> str | None:
  """The value of the last --config in `argv` (`--config=PATH` or `--config PATH`; absl takes
  the last), or None."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      value = arg[len("--config="):]
    elif arg == "--config" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _load_config_file(spec: str):
  """The ConfigDict of a config file argument (`PATH` or `PATH:ARG`, as ml_collections reads
  it); ValueError with one line when the file is missing or its get_config fails."""
  path, arg = spec, None
  if not os.path.isfile(path) and ":" in spec:
    path, arg = spec.rsplit(":", 1)
  if not os.path.isfile(path):
    raise ValueError(f"--config={spec}: no such file or built-in config; allowed: a config file "
                     "(a path relative to the current directory or absolute) or one of "
                     f"{', '.join(configs.names())}.")
  try:
    module_spec = importlib.util.spec_from_file_location("_ddpm_checked_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg is not None else module.get_config()
  except Exception as e:  # pylint: disable=broad-except  # Any error of the user's file.
    raise ValueError(f"--config={spec} could not be loaded ({type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''}).") from None


def config_argument_error(argv) -> str | None:
  """A one-line error for a --config file that cannot be loaded or a --config.<key> override
  naming a key the config does not have; None when both are fine (values are checked later).

  ml_collections raises a traceback for either; this runs before absl parses the flags.
  """
  spec = _config_file_argument(argv)
  overrides = [a for a in argv if a.startswith(("--config.", "--noconfig."))]
  if spec is None:
    return None
  try:
    config = _load_config_file(spec)
  except ValueError as e:
    return str(e)
  for arg in overrides:
    dotted = arg.split("=", 1)[0].split(".", 1)[1]
    node, where = config, "config"
    for part in dotted.split("."):
      keys = getattr(node, "keys", None)
      if keys is None:  # A leaf (e.g. a tuple element): the value check comes later.
        break
      if part not in node:
        allowed = ", ".join(sorted(node.keys()))
        return (f"{arg}: {where} has no key {part!r}; allowed: {allowed} (the keys of {where} in "
                f"{spec}).")
      node, where = node[part], f"{where}.{part}"
  return None


def resolve_arguments(argv) -> list[str]:
  """`argv` with built-in config names replaced by their files (`--config=mnist` ->
  `--config=.../ddpm/configs/mnist.py`) and a leading mode word (`ddpm sample ...`) turned
  into --mode=sample."""
  argv = list(argv)
  if len(argv) > 1 and argv[1] in MODES:
    argv[1] = f"--mode={argv[1]}"
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      argv[i] = "--config=" + configs.resolve(arg[len("--config="):])
    elif arg == "--config" and i + 1 < len(argv):
      argv[i + 1] = configs.resolve(argv[i + 1])
  return argv


def parse_flags(argv):
  """absl's flag parsing, with built-in config names, a mode word, and one-line errors for a bad
  --config file or override key."""
  argv = resolve_arguments(argv)
  error = config_argument_error(argv)
  if error:
    print(f"ddpm: error: {error}", file=sys.stderr)
    sys.exit(2)
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f"ddpm: error: {e}. Pass --helpfull to see the flags.", file=sys.stderr)
    sys.exit(2)


def setup_job(mode: str, config, workdir: str):
  """`ddpm.jobs.setup_job`: the job of `mode`, set up; `.run()` runs it (notebooks)."""
  # Imported on first use: a multi-process run initializes jax.distributed (main, below)
  # before anything imports JAX.
  from ddpm import jobs  # pylint: disable=g-import-not-at-top
  return jobs.setup_job(mode, config, workdir)


_ALLOCATOR_NOTE: list[str] = []  # Set by `run`: tcmalloc would help but is missing, or failed.


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  quiet_logging()
  for note in _ALLOCATOR_NOTE:
    logging.info("%s", note)
  if xla_flags.is_set(os.environ, allocator.REEXEC_MARK_ENV):
    mapped = allocator.running_allocator()
    if mapped:
      logging.info("Memory allocator: %s (LD_PRELOAD; DDPM_NO_TCMALLOC=1 runs with glibc's).",
                   mapped)
    else:
      logging.warning("LD_PRELOAD=%s did not load; running with glibc's malloc.",
                      os.environ.get("LD_PRELOAD", ""))
  try:  # Before any other JAX call: afterwards pmap spans every process's devices.
    distributed.initialize_from_flags_or_env()
  except ValueError as e:
    logging.error("%s", e)
    sys.exit(f"ddpm: error: {e}")
  import jax  # pylint: disable=g-import-not-at-top

  # Before the first compile: a restart loads the programs its previous run compiled.
  logging.info("%s", compilation_cache.enable())
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(),
               jax.process_count(), jax.local_devices())
  try:
    job = setup_job(FLAGS.mode, FLAGS.config, FLAGS.workdir)
  except (ValueError, RuntimeError) as e:
    # Bad user input: one line, non-zero exit, nothing written to checkpoints/.
    logging.error("%s", e)
    sys.exit(f"ddpm: error: {e}")
  try:
    job.run()
  except (FloatingPointError, storage.WriteError) as e:
    # nan_policy=stop (the message names the step), or a full disk (it says what is intact).
    logging.error("%s", e)
    sys.exit(f"ddpm: error: {e}")


def run() -> None:
  """The `ddpm` console script (pyproject.toml): `python -m ddpm.main`.

  First, on CPU, the process re-executes itself under tcmalloc when the system has it
  (`ddpm.runtime.allocator`: ~1.27x the training steps per second; DDPM_NO_TCMALLOC=1 opts out).
  Its compiled programs go to a persistent cache (`ddpm.runtime.compilation_cache`,
  ~/.cache/ddpm/xla; DDPM_COMPILATION_CACHE=0 opts out), so a restart skips most compiling.
  """
  note = allocator.reexec_under_tcmalloc()  # Returns only when it did not re-execute.
  if note:
    _ALLOCATOR_NOTE.append(note)
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
