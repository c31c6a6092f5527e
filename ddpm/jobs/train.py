"""`--mode=train`: the training loop around the pmap-ed step (Flax examples' house style).

`Trainer.setup(config, workdir)` validates everything a user can get wrong (config, workdir,
device count, dataset, checkpoint shape) before any checkpoint is touched, restores the
latest checkpoint if there is one, and builds the input stream at the restored step;
`Trainer.run()` then trains, logs, writes sample grids and saves checkpoints.

With several processes (`ddpm.runtime.distributed`), every process runs the same program on its
local devices and its own slice of the data; the pmap-ed step (`ddpm.training.train_step`)
averages gradients over all devices of all processes, so every process holds the same state.
Process 0 alone writes the workdir's files (config.json, metrics.jsonl, TensorBoard events,
sample grids); checkpoints are saved by all processes together (orbax writes the replicated
arrays once, from process 0) and restored by each. A SIGTERM to any process (a preemption
notice) stops all of them at the same step, agreed through JAX's preemption sync, after saving
a checkpoint there.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import threading
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import jax_utils
from jax.experimental import multihost_utils

from ddpm.data import image_folder, input_pipeline
from ddpm.diffusion import schedules
from ddpm.diffusion.schedules import Schedule
from ddpm.jobs import config_validation
from ddpm.kernels import conv as kernels_conv
from ddpm.models import build
from ddpm.models.unet import UNet
from ddpm.pipelines import denoiser, generation
from ddpm.runtime import checkpointing, distributed, replicas, storage, workdir_lock
from ddpm.training import finetune, train_step
from ddpm.visualization import grids


FOLDER_MANIFEST = "image_folder.json"


def check_folder(workdir: str, folder: image_folder.ImageFolder, num_classes: int) -> None:
  """An image folder's identity (`ImageFolder.identity`: image count, a hash of the files,
  class names) checked and written to workdir/image_folder.json.

  Every process must see the same folder (else one-line ValueError on all of them, before any
  data is read); a run resumed on a folder whose class names changed stops (its labels would
  change meaning); one whose files changed goes on with a warning (its data order, and the
  held-out slices, are no longer those of an uninterrupted run). Class names are logged.
  """
  identity = folder.identity()
  if jax.process_count() > 1:
    mine = np.frombuffer(bytes.fromhex(identity["files_sha1"][:16]), np.int32)
    try:
      multihost_utils.assert_equal(mine, "image folder differs between processes")
    except AssertionError:
      raise ValueError(f"the processes see different image folders at {folder.root} (this one: "
                       f"{folder.num_examples} images); every host needs the same files at the "
                       "same path.") from None
  if num_classes and folder.class_names:
    logging.info("Image folder %s: %d images, classes %s.", folder.root, folder.num_examples,
                 ", ".join(f"{i}={n}" for i, n in enumerate(folder.class_names)))
  path = os.path.join(workdir, FOLDER_MANIFEST)
  try:
    with open(path) as f:
      before = json.load(f)
  except (OSError, ValueError):
    before = None
  if before and num_classes and before.get("classes") != identity["classes"]:
    raise ValueError(f"the image folder's classes changed since this workdir's run started "
                     f"({before.get('classes')} then, {identity['classes']} now, "
                     f"{path}); its labels would change meaning: restore the folder or use "
                     "another --workdir.")
  if before and before.get("files_sha1") != identity["files_sha1"]:
    logging.warning("The image folder %s changed since this workdir's last run (%s images then, "
                    "%d now): a resumed run no longer reads what an uninterrupted one would.",
                    folder.root, before.get("num_images"), folder.num_examples)
  if not distributed.is_main_process():
    return
  identity["counts"] = np.bincount(folder.labels, minlength=max(1, num_classes)).tolist()
  text = json.dumps(identity, indent=2)
  try:
    storage.write_atomically(path, lambda f: f.write(text.encode()))
  except OSError as e:
    logging.warning("Could not write %s (%s).", path, e.strerror or e)


def guide_checkpoint_steps(config) -> tuple[int, ...]:
  """The checkpoints autoguidance reads (`denoiser.guide_steps`: sampling.guide_step and
  guide_average_steps) whenever config.sampling names a guide_step >= 0, whatever its weight
  (a run resumed with autoguidance_weight=0 must not delete them), else (): the run saves each
  of them whatever checkpoint_every_steps says, and keeps it for good."""
  s = config.sampling
  step = s.get("guide_step", -1)
  return () if isinstance(step, bool) or step < 0 else denoiser.guide_steps(s)


def saves_checkpoint(step: int, config, last: bool = False) -> bool:
  """Whether the run writes a checkpoint at `step`: every training.checkpoint_every_steps, at
  each guide checkpoint (`guide_checkpoint_steps`) and at its last step."""
  return (last or step % config.training.checkpoint_every_steps == 0
          or step in guide_checkpoint_steps(config))


def warn_if_guide_missing(config, start_step: int = 0, saved=()) -> None:
  """A warning when config.sampling asks for autoguidance by checkpoints
  (`guide_checkpoint_steps`) this run will not have: outside steps 1..num_train_steps - 1, or
  at or before `start_step` (a resumed run) and not among the `saved` steps. The grids then
  stay unguided, and --mode=sample stops and asks for them."""
  t = config.training
  missing = [s for s in guide_checkpoint_steps(config)
             if not 0 < s < t.num_train_steps or (s <= start_step and s not in saved)]
  if missing and denoiser.autoguided(config.sampling):
    logging.warning(
        "Autoguidance needs checkpoint(s) %s (config.sampling.guide_step, guide_average_steps), "
        "which this run will not have: it saves them only at steps 1..%d, after its start at "
        "step %d (saved: %s). The grids stay unguided and sampling with autoguidance will stop; "
        "name other checkpoints, or config.sampling.autoguidance_weight=0.",
        ", ".join(map(str, missing)), t.num_train_steps - 1, start_step,
        ", ".join(map(str, saved)) or "none")


def prepare_workdir(workdir: str) -> str:
  """Creates `workdir` if needed; one-line errors if it is a file or not writable."""
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir={workdir} is a file; allowed: a directory (new or existing).")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ValueError(f"--workdir={workdir} cannot be created ({e.strerror}).") from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise ValueError(f"--workdir={workdir} is not writable; allowed: a directory you can write to.")
  return workdir


def take_workdir_lock(workdir: str) -> workdir_lock.WorkdirLock | None:
  """Process 0 takes the workdir's training lock (`ddpm.runtime.workdir_lock`); every process
  raises the same one-line WorkdirLockedError if another live run holds it."""
  lock, error = None, ""
  if jax.process_index() == 0:
    try:
      lock = workdir_lock.acquire(workdir)
    except workdir_lock.WorkdirLockedError as e:
      error = str(e)
  error = distributed.share_from_main("workdir_lock", error)
  if error:
    raise workdir_lock.WorkdirLockedError(error)
  if lock is not None:
    logging.info("Holding %s for this run (%s).", lock.path, lock.holder["run_id"])
  return lock


@dataclasses.dataclass
class Trainer:
  config: ml_collections.ConfigDict
  workdir: str
  model: UNet
  schedule: Schedule
  state: train_step.TrainState  # Unreplicated, as restored.
  manager: Any
  meta: dict
  train_iter: Any
  p_train_step: Any
  start_step: int
  lock: workdir_lock.WorkdirLock | None = None  # Process 0's hold on workdir/train.lock.
  stop_requested: int = 0  # The signal number once SIGTERM/SIGINT arrived.
  skipped_steps: int = 0  # Steps whose non-finite update was skipped (nan_policy=skip).
  failed_writes: dict = dataclasses.field(default_factory=dict)  # Kind -> count (full disk).
  # Autoguidance's guide for the grids once its checkpoints exist (False: they cannot be read).
  guide_replicated: Any = None

  @staticmethod
  def validate(config) -> None:
    """The config-only checks of `setup` (no data, devices or checkpoint read): one-line
    ValueError for the first bad value."""
    config_validation.validate_config(config)

  @classmethod
  def setup(cls, config, workdir: str) -> "Trainer":
    """Checks the inputs, restores the latest checkpoint and builds the data stream.

    Raises ValueError/RuntimeError with a one-line message for bad user input; nothing is
    written to the checkpoint directory before all checks have passed.
    """
    cls.validate(config)
    input_pipeline.local_batch_size(config.training.batch_size)  # Divisible by devices.
    workdir = prepare_workdir(workdir)
    # Unknown dataset, or an image folder that is empty or holds a bad image -> error.
    builder = input_pipeline.get_builder(config.data, config.model.num_classes)
    input_pipeline.ensure_prepared(builder, config.data)
    input_pipeline.check_labels(builder, config.data, config.model.num_classes)
    lock = take_workdir_lock(workdir)  # Before any checkpoint is read or written.
    try:
      if isinstance(builder, image_folder.ImageFolder):
        check_folder(workdir, builder, config.model.num_classes)
      return cls._restore(config, workdir, lock)
    except BaseException:
      if lock is not None:
        lock.release()
      raise

  @classmethod
  def _restore(cls, config, workdir: str, lock) -> "Trainer":
    """The model, the newest readable checkpoint of `workdir` and the data stream from there."""
    model, tx, lr_fn, state, meta = train_step.initial_state(config)
    schedule = schedules.schedule_from_config(config.diffusion)
    manager = checkpointing.create_manager(workdir, config.training.keep_checkpoints,
                                           config.training.checkpoint_every_steps,
                                           config.training.keep_every_steps,
                                           keep_steps=guide_checkpoint_steps(config))
    t = config.training
    if t.init_from and manager.latest_step() is None:  # Fine-tuning: a fresh run from there.
      params, _ = finetune.load_init_params(t.init_from, state.params, meta, t.init_params)
      state = train_step.create_train_state(jax.random.PRNGKey(config.seed), config, model, tx,
                                            params)
    elif t.init_from:
      logging.info("Resuming this run's own checkpoint; config.training.init_from=%s was used "
                   "only to start it.", t.init_from)
    state = checkpointing.restore(manager, state, meta)
    if t.trainable:
      n_train, n_frozen = finetune.count(state.params,
                                         finetune.trainable_mask(state.params, t.trainable))
      logging.info("Training %d parameters matching config.training.trainable=%r; %d are frozen.",
                   n_train, t.trainable, n_frozen)
    start_step = int(state.step)
    warn_if_guide_missing(config, start_step, sorted(manager.all_steps()))
    train_iter = input_pipeline.create_train_iterator(config, start_step)
    p_train_step = train_step.make_p_train_step(model, schedule, tx, lr_fn, config)
    return cls(config, workdir, model, schedule, state, manager, meta, train_iter,
               p_train_step, start_step, lock)

  @property
  def _grid_per_device(self) -> int:
    return -(-self.config.training.num_sample_images // jax.local_device_count())

  @functools.cached_property
  def _generate_fn(self):
    """The grids' sampler without autoguidance (before its guide checkpoint exists)."""
    c = self.config
    sampling = c.sampling.copy_and_resolve_references()
    sampling.autoguidance_weight = 0.0
    return generation.make_generate_fn(self.model, self.schedule, sampling, c.diffusion,
                                       self._grid_per_device, build.image_shape(c))

  @functools.cached_property
  def _guided_generate_fn(self):
    c = self.config
    return generation.make_generate_fn(self.model, self.schedule, c.sampling, c.diffusion,
                                       self._grid_per_device, build.image_shape(c))

  def _grid_guide(self, ema_params_replicated, step: int):
    """With config.sampling's autoguidance, the guide's replicated parameters (the mean of its
    checkpoints, `checkpointing.restore_mean_params`) once every guide checkpoint is saved and
    older than `step` (read once); else None (the grid is unguided)."""
    s = self.config.sampling
    steps = guide_checkpoint_steps(self.config)
    if (not denoiser.autoguided(s) or not steps[-1] < step
        or self.guide_replicated is False):
      return None
    if self.guide_replicated is None:
      checkpointing.wait_until_finished(self.manager)
      if not set(steps) <= set(self.manager.all_steps()):  # Saved before now, so gone for good.
        self.guide_replicated = False  # warn_if_guide_missing said which.
        return None
      template = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype),
                                        ema_params_replicated)
      which = "ema_params" if s.guide_use_ema else "params"
      try:
        guide = checkpointing.restore_mean_params(self.manager, steps, template, self.meta, which)
      except Exception as e:  # pylint: disable=broad-except  # A grid never stops training.
        logging.warning("Sample grids stay unguided: the guide's checkpoints %s cannot be read "
                        "(%s).", steps, str(e).splitlines()[0][:200] if str(e) else
                        type(e).__name__)
        self.guide_replicated = False
        return None
      self.guide_replicated = jax_utils.replicate(guide, axis_name=replicas.AXIS)
      logging.info("Sample grids from now on: autoguided (weight %g) by %s.",
                   s.autoguidance_weight, denoiser.describe_guide(s))
    return self.guide_replicated

  def sample_grid(self, ema_params_replicated, step: int) -> tuple[str, np.ndarray]:
    """Draws `training.num_sample_images` images from the EMA parameters into a PNG grid.

    The key is the same at every step, so successive grids show the same noise denoised by
    better and better parameters. With config.sampling's autoguidance, grids after its guide
    checkpoint are guided by it, as `--mode=sample` draws.
    """
    c = self.config
    key = jax.random.fold_in(jax.random.PRNGKey(c.sampling.seed), 0)
    num = c.training.num_sample_images
    guide = self._grid_guide(ema_params_replicated, step)
    fn, params = ((self._generate_fn, ema_params_replicated) if guide is None else
                  (self._guided_generate_fn, (ema_params_replicated, guide)))
    images = generation.generate(fn, params, key, num, self._grid_per_device,
                                 generation.sample_labels(c, num))
    path = os.path.join(self.workdir, "samples", f"step_{step:07d}.png")
    grid = grids.make_grid(images, generation.grid_columns(c, num))
    if distributed.is_main_process():  # Every process draws (pmap spans them all); one writes.
      self._soft_write("sample grid", grids.save_png, path, grid)
    return path, grid

  def _soft_write(self, kind: str, write, *args):
    """write(*args) for an output a person looks at (grids, metrics, TensorBoard): an OS error
    (a full disk, a path that is not a directory) is a warning (the first of each kind, then a
    count at the end), not the end of the run."""
    try:
      return write(*args)
    except Exception as e:  # pylint: disable=broad-except  # TensorBoard raises its own types.
      reason = storage.storage_error(e) or (
          (e.strerror or str(e)) if isinstance(e, OSError) else None)
      if reason is None:
        raise
      if kind not in self.failed_writes:
        where = f" {args[0]}" if args and isinstance(args[0], str) else ""
        logging.warning("Could not write the %s%s (%s); training goes on (later failures of "
                        "this kind are counted, not logged).", kind, where, reason)
      self.failed_writes[kind] = self.failed_writes.get(kind, 0) + 1
      return None

  def _check_finite(self, host_metrics: list[tuple[int, dict]]) -> None:
    """Applies config.training.nan_policy to steps whose loss or gradient was not finite.

    The train step never applies a non-finite update, so the state stays finite either way;
    "stop" raises naming the first bad step, "skip" logs a warning and goes on.
    """
    bad = [s for s, m in host_metrics if m["nonfinite"] > 0]
    if not bad:
      return
    if self.config.training.nan_policy == "stop":
      raise FloatingPointError(
          f"non-finite loss or gradient at step {bad[0]} ({len(bad)} step(s) so far); its update "
          f"was not applied and no checkpoint from step {bad[0]} on was written. Lower "
          f"config.optim.learning_rate or set config.training.nan_policy=skip.")
    self.skipped_steps += len(bad)
    logging.warning("Skipped the update of %d step(s) with a non-finite loss or gradient "
                    "(first: step %d; %d in this run).", len(bad), bad[0], self.skipped_steps)

  def _handle_signal(self, signum, frame):  # pylint: disable=unused-argument
    logging.warning("Received signal %d: saving a checkpoint after this step, then stopping.", signum)
    self.stop_requested = signum

  def _preempted(self, step: int) -> bool:
    """Several processes: whether all have reached the step JAX's preemption sync agreed on
    after a SIGTERM reached any of them (then every process returns True at the same step)."""
    try:
      reached = multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # Preemption service disabled (jax_enable_preemption_service).
      return False
    if reached:
      logging.warning("All %d processes reached the preemption sync point at step %d (a SIGTERM "
                      "reached at least one): saving a checkpoint, then stopping.",
                      jax.process_count(), step)
      self.stop_requested = signal.SIGTERM
    return reached

  def run(self) -> train_step.TrainState:
    """Trains to config.training.num_train_steps; SIGTERM/SIGINT save a checkpoint and stop.

    With several processes, SIGTERM goes through JAX's preemption sync instead (installed by
    jax.distributed.initialize), so all processes stop at the same step; SIGINT is not caught.
    """
    c = self.config
    total = c.training.num_train_steps
    is_main = jax.process_index() == 0
    handlers = {}
    if (threading.current_thread() is threading.main_thread() and jax.process_count() == 1):

      def handle_signal(signum, frame):  # Not the bound method: signal.signal returns the old
        self._handle_signal(signum, frame)  # handler via enum lookup, which formats its repr,
        # and this dataclass's repr prints every array of the state (seconds per restore).

      for sig in (signal.SIGTERM, signal.SIGINT):
        handlers[sig] = signal.signal(sig, handle_signal)
    try:
      return self._run(c, total, is_main)
    finally:
      for sig, handler in handlers.items():
        signal.signal(sig, handler)
      if self.lock is not None:
        self.lock.release()

  def _run(self, c, total: int, is_main: bool) -> train_step.TrainState:
    # TensorBoard events from process 0 only; the console line below is the human log.
    # clu's writers import TensorFlow (~0.5 GB): only a training run pays for that.
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    writer = (metric_writers.SummaryWriter(self.workdir) if is_main
              else metric_writers.MultiWriter([]))
    if is_main:
      self._soft_write("config.json", _write_text, os.path.join(self.workdir, "config.json"),
                       c.to_json_best_effort(indent=2))
      if self.start_step == 0:
        self._soft_write("TensorBoard events", writer.write_hparams, _flatten(c.to_dict()))
    # The mesh axis name must be pmap's, or the second step recompiles for a new sharding.
    state = jax_utils.replicate(self.state, axis_name=replicas.AXIS)
    train_iter = jax_utils.prefetch_to_device(self.train_iter, 2, axis_name=replicas.AXIS)
    images_per_step = c.training.batch_size
    logging.info("Training %s for %d steps from step %d: %d parameters, %d devices (%d "
                 "process(es)), global batch %d, model dtype %s.", c.data.dataset, total,
                 self.start_step, sum(np.size(p) for p in jax.tree_util.tree_leaves(self.state.params)),
                 jax.device_count(), jax.process_count(), images_per_step, c.model.dtype)
    logging.info("Convolutions: %s.", kernels_conv.status())
    pending: list = []  # (step, device metrics) not yet fetched.
    fetched: list = []  # (step, host metrics) since the last log line.
    t_log, step_log = time.time(), self.start_step
    t_start = time.time()
    metrics_path = os.path.join(self.workdir, "metrics.jsonl")

    def drain():
      host = [replicas.unreplicate(m) for _, m in pending]
      new = [(s, m) for (s, _), m in zip(pending, host)]
      pending.clear()
      self._check_finite(new)
      fetched.extend(new)

    step = self.start_step
    for step in range(self.start_step + 1, total + 1):
      batch = next(train_iter)
      state, metrics = self.p_train_step(state, batch)
      pending.append((step, metrics))
      if len(pending) > 2:
        # Let the host run at most 2 steps ahead of the devices, so a stop signal is acted on
        # within a step or two (not a whole logging interval) and steps/s is what ran.
        jax.block_until_ready(pending[-3][1]["loss"])
      if step == self.start_step + 1:  # Keep compilation out of the steps/s figures.
        jax.block_until_ready(metrics)
        logging.info("First step (compilation included) took %.1f s.", time.time() - t_start)
        t_log, step_log = time.time(), step
      if jax.process_count() > 1:
        stop = self._preempted(step)
      else:
        stop = bool(self.stop_requested)  # Read once: a signal may arrive at any bytecode.
      last = step == total or stop
      if step % c.training.log_every_steps == 0 or last:
        drain()
        applied = [m for _, m in fetched if m["nonfinite"] == 0]  # Skipped steps are NaN.
        summary = {k: float(np.mean([m[k] for m in applied])) if applied else float("nan")
                   for k in fetched[0][1]}
        summary["nonfinite"] = float(sum(m["nonfinite"] for _, m in fetched))
        fetched.clear()
        now = time.time()
        steps_per_sec = (step - step_log) / max(now - t_log, 1e-9)
        summary.update(steps_per_sec=steps_per_sec, images_per_sec=steps_per_sec * images_per_step)
        t_log, step_log = now, step
        eta = (total - step) / max(steps_per_sec, 1e-9)
        logging.info("step %d/%d: loss %.5f, grad norm %.3f, lr %.2e, %.2f steps/s, %.1f images/s, "
                     "ETA %s", step, total, summary["loss"], summary["grad_norm"],
                     summary["learning_rate"], steps_per_sec, summary["images_per_sec"],
                     _format_seconds(eta))
        self._soft_write("TensorBoard events", writer.write_scalars, step, summary)
        if is_main:
          self._soft_write("metrics.jsonl line", _append_line, metrics_path,
                           json.dumps({"step": step, "time": now - t_start, **summary}))
      if c.training.sample_every_steps > 0 and (step % c.training.sample_every_steps == 0
                                                or step == total):
        t0 = time.time()
        path, grid = self.sample_grid(state.ema_params, step)
        logging.info("Wrote samples of step %d to %s (%.1f s).", step, path, time.time() - t0)
        self._soft_write("TensorBoard events", writer.write_images, step,
                         {"samples": grid[None]})
      if saves_checkpoint(step, c, last):
        drain()  # Never checkpoint past a non-finite step under nan_policy=stop.
        # saves_checkpoint decides; force: orbax's save interval would skip the guide's and the
        # last step.
        checkpointing.save(self.manager, step, replicas.unreplicate(state), self.meta, force=True)
      if stop:
        logging.warning("Stopped by signal %d at step %d; the same command resumes from here.",
                        self.stop_requested, step)
        break
    checkpointing.wait_until_finished(self.manager)
    self._soft_write("TensorBoard events", writer.flush)
    self._soft_write("TensorBoard events", writer.close)
    if self.failed_writes:
      logging.warning("Outputs that could not be written in this run (kind: count): %s.",
                      ", ".join(f"{k}: {n}" for k, n in self.failed_writes.items()))
    logging.info("Finished at step %d in %s.", step, _format_seconds(time.time() - t_start))
    return replicas.unreplicate(state)


def _write_text(path: str, text: str) -> None:
  with open(path, "w") as f:
    f.write(text)


def _append_line(path: str, line: str) -> None:
  with open(path, "a") as f:
    f.write(line + "\n")


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
  return out


def _format_seconds(s: float) -> str:
  s = int(max(s, 0))
  h, rem = divmod(s, 3600)
  m, sec = divmod(rem, 60)
  return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def train_and_evaluate(config, workdir: str) -> train_step.TrainState:
  """Trains per `config` in `workdir`, resuming from its latest checkpoint."""
  return Trainer.setup(config, workdir).run()
