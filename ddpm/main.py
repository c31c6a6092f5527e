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

Any config value can be overridden with --config.<group>.<key>=<value>.

Several processes (a multi-host TPU pod slice, several GPU hosts, or CPU processes) run the
same command, each with its own process id; see `ddpm.runtime.distributed`:

  python -m ddpm.main --config=configs/mnist.py --workdir=/shared/mnist \
      --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0   # 1 on the other
  python -m ddpm.main --config=configs/mnist.py --workdir=/shared/mnist --distributed=cluster

Each mode is a job of `ddpm.jobs` (`ddpm.jobs.setup_job`, also re-exported here for notebooks).
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ddpm.runtime import distributed

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
# The keys of ddpm.jobs.JOBS, spelled out so that parsing flags imports no JAX (a test checks).
MODES = ("train", "sample", "eval", "inpaint", "process", "denoise", "synthesize", "anomaly")
flags.DEFINE_enum("mode", "train", MODES,
                  "train (also fine-tuning: config.training.init_from/trainable); sample: draw "
                  "images (class-conditional: config.sampling.class_label/guidance_weight); "
                  "eval: FID/IS/precision/recall, bits/dim, denoising; inpaint: RePaint with "
                  "config.edit.mask; process: forward and reverse strips and GIFs; denoise: "
                  "denoising and SDEdit (config.edit); synthesize: labelled samples as .npz and a "
                  "TFDS dataset; anomaly: anomaly scores and AUROC (config.anomaly).")
config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()


class _QuietOrbax(logging.logging.Filter):
  """Drops orbax's INFO chatter (a dozen lines per save); its warnings and errors stay."""

  def filter(self, record):
    return record.levelno >= logging.logging.WARNING or "/orbax/" not in record.pathname


def quiet_logging() -> None:
  """INFO logs without TensorFlow's C++ chatter and orbax's per-save INFO lines."""
  # Keep TensorFlow (tf.data only) quiet; set before it is imported.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  logger = logging.get_absl_logger()
  if not any(isinstance(f, _QuietOrbax) for f in logger.filters):
    logger.addFilter(_QuietOrbax())


def setup_job(mode: str, config, workdir: str):
  """`ddpm.jobs.setup_job`: the job of `mode`, set up; `.run()` runs it (notebooks)."""
  # Imported on first use: a multi-process run initializes jax.distributed (main, below)
  # before anything imports JAX.
  from ddpm import jobs  # pylint: disable=g-import-not-at-top
  return jobs.setup_job(mode, config, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  quiet_logging()
  try:  # Before any other JAX call: afterwards pmap spans every process's devices.
    distributed.initialize_from_flags_or_env()
  except ValueError as e:
    logging.error("%s", e)
    sys.exit(f"ddpm: error: {e}")
  import jax  # pylint: disable=g-import-not-at-top

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
  except FloatingPointError as e:  # nan_policy=stop: the message names the step.
    logging.error("%s", e)
    sys.exit(f"ddpm: error: {e}")


if __name__ == "__main__":
  app.run(main)
