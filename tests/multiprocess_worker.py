"""One process of tests/test_multiprocess.py: `python -m ddpm.main` exactly (flags, distributed
initialization, training), observed from outside; with glibc's malloc (the command line's
re-execution under tcmalloc, ddpm.runtime.allocator, applies to `python -m ddpm.main` itself).

Two wrappers record, without changing anything, what the test cannot see in the workdir: the
example indices this process's input pipeline fed to training, and the final state it held.
Both are written to --out (.npz). Usage: the ddpm.main command line plus --out=FILE.npz.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from ddpm import main  # noqa: E402  (main defines the flags)
from ddpm.data import input_pipeline  # noqa: E402
from ddpm.jobs import train as train_job  # noqa: E402

flags.DEFINE_string("out", None, "Where to write this process's indices and final state (.npz).")
FLAGS = flags.FLAGS
_fed: list = []  # Index arrays of the batches handed to the training loop, in order.
_final: list = []  # The state Trainer.run returned.
_create_train_iterator, _run = input_pipeline.create_train_iterator, train_job.Trainer.run


def _recording_iterator(config, start_step=0):
  for batch in _create_train_iterator(config, start_step):
    _fed.append(batch["index"].copy())
    yield batch


def _recording_run(self):
  state = _run(self)
  _final.append((self.start_step, state))
  return state


def _main(argv):
  input_pipeline.create_train_iterator = _recording_iterator
  train_job.Trainer.run = _recording_run
  main.main(argv)
  import jax  # pylint: disable=g-import-not-at-top
  start, state = _final[0]
  steps = int(state.step) - start
  # The loop prefetches two batches ahead; the first `steps` batches are the ones trained on.
  name = lambda k: str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
  flat = {"/".join(map(name, path)): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(state)[0]}
  np.savez(FLAGS.out, indices=np.stack(_fed[:steps]), start_step=start,
           process_index=jax.process_index(), process_count=jax.process_count(),
           local_device_count=jax.local_device_count(), device_count=jax.device_count(),
           **{"state/" + k: v for k, v in flat.items()})


if __name__ == "__main__":
  app.run(_main)
