r"""Quality per CPU-minute: train a recipe for a wall-clock budget, score checkpoints along the way.

One call is one run of one recipe (a config plus `--config.x.y=v` overrides, a seed):

  1. trains with `python -m ddpm.main` (sample grids off, a checkpoint kept every
     `--checkpoint_every` steps) and stops it with SIGTERM when `--minutes` of wall clock have
     passed since launch (the trainer saves a checkpoint at that step and exits 0); the time at
     which each checkpoint appeared is recorded, so "minutes" include start-up and compilation,
     as a user sees them;
  2. for each of `--eval_minutes` picks the newest checkpoint written by then, and scores it with
     `python -m ddpm.main --mode=eval --config.eval.metrics=samples` for each sampler of
     `--samplers` (N = `--num_samples` images; FID/precision/recall/IS with the project's
     classifier features against the train split, beside the real-data floor);
  3. appends one row per (checkpoint, sampler) to `runs.jsonl` in `--out` (the command of every
     step included) and re-renders `RESULTS.md` (a table of every run) and `fid_vs_minutes.png`.

One run at a time on an idle machine: two runs on 2 cores distort each other's minutes.

  python experiments/quality/harness.py --name=baseline --config=configs/mnist.py --minutes=12 \
      --eval_minutes=12 --samplers=heun:10:trailing,dpm_solver_pp_2m:20:trailing
  python experiments/quality/harness.py --name=v_minsnr --minutes=12 --eval_minutes=12 \
      --override=--config.diffusion.prediction_type=v \
      --override=--config.diffusion.loss_weighting=min_snr
  python experiments/quality/harness.py --render   # tables and plot from runs.jsonl only

A sampler is method:steps[:spacing][:ag=W@STEP[+STEP...]] (spacing default uniform); its NFE is steps,
or 2 steps - 1 for Heun, per network. ag=W@STEP adds autoguidance of weight W by the EMA
parameters of the same run's checkpoint STEP (ag=W@STEPraw: its raw parameters; ag=W@S1+S2+...:
the mean of several checkpoints', `--config.sampling.guide_average_steps`), which doubles
the network evaluations (`--config.sampling.autoguidance_weight`); ag=W@STEP/LO-HI guides only
the evaluations at time steps LO..HI, and counts the guide's evaluations there alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time

import ml_collections

from ddpm.pipelines import denoiser, generation

REPO = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
METHODS = ("ddpm", "ddim", "dpm_solver_pp_2m", "heun")
SPACINGS = ("uniform", "trailing", "quadratic")
NUM_TIMESTEPS = 1000  # T of the configs this harness runs (MNIST, Fashion-MNIST), for the NFE.


@dataclasses.dataclass(frozen=True)
class Sampler:
  method: str
  steps: int
  spacing: str = "uniform"
  autoguidance_weight: float = 0.0
  guide_step: int = -1
  guide_average_steps: tuple = ()
  guide_use_ema: bool = True
  guide_t_min: int = 0
  guide_t_max: int = -1

  def sampling_config(self) -> ml_collections.ConfigDict:
    """The config.sampling keys this sampler sets."""
    return ml_collections.ConfigDict(dict(
        method=self.method, num_steps=self.steps, spacing=self.spacing, eta=0.0,
        variance="beta_tilde", autoguidance_weight=self.autoguidance_weight,
        guide_step=self.guide_step, guide_average_steps=self.guide_average_steps,
        guide_use_ema=self.guide_use_ema,
        guide_t_min=self.guide_t_min, guide_t_max=self.guide_t_max))

  @property
  def nfe(self) -> int:
    """Network evaluations per image: Heun's last step is Euler (ddpm.diffusion.samplers);
    autoguidance evaluates the guide too."""
    return generation.network_evaluations(self.sampling_config(), NUM_TIMESTEPS)

  @property
  def guide_steps(self) -> tuple[int, ...]:
    """The checkpoints whose parameters the guide is the mean of, ascending."""
    return denoiser.guide_steps(self.sampling_config())

  @property
  def label(self) -> str:
    guide = ""
    if self.autoguidance_weight:
      steps = self.guide_steps
      guide = (f", autoguidance {self.autoguidance_weight:g} by step"
               f"{'s ' + '+'.join(map(str, steps)) + ' (mean)' if len(steps) > 1 else ' ' + str(steps[0])}"
               f"{'' if self.guide_use_ema else ' raw'}")
      if (self.guide_t_min, self.guide_t_max) != (0, -1):
        guide += f" at t {self.guide_t_min}-{self.guide_t_max if self.guide_t_max >= 0 else 'T'}"
    return f"{self.method} {self.steps} {self.spacing}{guide} ({self.nfe} NFE)"

  def overrides(self) -> list[str]:
    return [f"--config.sampling.{k}={tuple(v) if isinstance(v, (tuple, list)) else v}"
            for k, v in self.sampling_config().items() if k != "variance"]

  def eval_name(self, seed: int) -> str:
    """The key `--mode=eval` files these samples under: the package's own sampler name."""
    return f"{generation.sampler_name(self.sampling_config())}_seed{seed}"


def parse_samplers(spec: str) -> list[Sampler]:
  """"heun:10:trailing,ddim:50,heun:5:trailing:ag=1@1000" -> Samplers; one-line ValueError
  for anything else."""
  out = []
  for item in (s.strip() for s in spec.split(",") if s.strip()):
    parts = item.split(":")
    if len(parts) == 3 and parts[2].startswith("ag="):  # method:steps:ag=W@STEP
      parts.insert(2, "uniform")
    if len(parts) not in (2, 3, 4) or parts[0] not in METHODS or not parts[1].isdigit():
      raise ValueError(f"sampler {item!r}: expected method:steps[:spacing][:ag=W@STEP] with "
                       f"method in {', '.join(METHODS)}")
    spacing = parts[2] if len(parts) >= 3 else "uniform"
    if spacing not in SPACINGS:
      raise ValueError(f"sampler {item!r}: spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
    guide = {}
    if len(parts) == 4:
      w, _, step = parts[3].removeprefix("ag=").partition("@")
      step, _, interval = step.partition("/")
      raw = step.endswith("raw")
      step = step.removesuffix("raw")
      lo, _, hi = interval.partition("-")
      try:
        weight = float(w)
      except ValueError:
        weight = -1.0
      steps = step.split("+")
      if (not parts[3].startswith("ag=") or not all(x.isdigit() for x in steps) or not weight > 0
          or (interval and not (lo.isdigit() and hi.isdigit() and int(lo) <= int(hi)))):
        raise ValueError(f"sampler {item!r}: autoguidance {parts[3]!r}; expected ag=W@STEP, "
                         "ag=W@STEPraw, optionally /LO-HI (guided time steps), with W > 0, STEP "
                         "a checkpoint step or steps joined by + (their mean) and LO <= HI")
      guide = dict(autoguidance_weight=weight, guide_step=int(steps[0]),
                   guide_average_steps=tuple(int(x) for x in steps[1:]), guide_use_ema=not raw)
      if interval:
        guide |= dict(guide_t_min=int(lo), guide_t_max=int(hi))
    out.append(Sampler(parts[0], int(parts[1]), spacing, **guide))
  if not out:
    raise ValueError("no sampler given; e.g. --samplers=heun:10:trailing")
  return out


def checkpoint_at(checkpoint_minutes: dict[int, float], minutes: float,
                  budget: float | None = None) -> int | None:
  """The newest checkpoint step written at or before `minutes` after launch (None: none yet);
  at or past the `budget`, the last checkpoint (the one saved when the run was stopped)."""
  if budget is not None and minutes >= budget and checkpoint_minutes:
    return max(checkpoint_minutes)
  done = [s for s, m in checkpoint_minutes.items() if m <= minutes + 1e-9]
  return max(done) if done else None


def recorded_budget(checkpoint_minutes: dict[int, float]) -> float | None:
  """The budget of a finished run (--eval_only): the minute its last checkpoint, the one saved
  when it was stopped, was written; the current --minutes flag says nothing about that run."""
  return max(checkpoint_minutes.values()) if checkpoint_minutes else None


def minute_marks(eval_minutes: str, budget: float | None) -> list[float]:
  """The minute marks to score: those of --eval_minutes, else the run's budget (its end). With
  --eval_only the budget is the recorded stop, never the --minutes flag's default."""
  try:
    marks = [float(m) for m in eval_minutes.split(",") if m.strip()]
  except ValueError:
    marks = [-1.0]
  if any(not m >= 0 for m in marks):
    raise ValueError(f"--eval_minutes={eval_minutes!r}: minute marks must be >= 0")
  return marks or ([] if budget is None else [budget])


def main_command(config: str, workdir: str, *flags: str) -> list[str]:
  return [sys.executable, "-m", "ddpm.main", f"--config={config}", f"--workdir={workdir}", *flags]


def record_checkpoints(ckpt_dir: pathlib.Path, seen: dict[int, float], minutes: float) -> None:
  """Adds each finished checkpoint (orbax renames it to its step number) not yet in `seen`."""
  if ckpt_dir.is_dir():
    for p in ckpt_dir.iterdir():
      if p.name.isdigit() and int(p.name) not in seen:
        seen[int(p.name)] = minutes


def train(args, workdir: str, log) -> tuple[dict[int, float], list[str]]:
  """Trains for args.minutes of wall clock; returns ({checkpoint step: minutes}, command)."""
  cmd = main_command(args.config, workdir, "--config.training.num_train_steps=1000000",
                     "--config.training.sample_every_steps=0",
                     f"--config.training.checkpoint_every_steps={args.checkpoint_every}",
                     f"--config.training.keep_every_steps={args.checkpoint_every}",
                     f"--config.seed={args.seed}", *args.override)
  log(f"train: {shlex.join(cmd)}")
  ckpt_dir = pathlib.Path(workdir) / "checkpoints"
  seen: dict[int, float] = {}
  t0 = time.time()
  with open(pathlib.Path(workdir + ".train.log"), "w") as out:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    stopped = False
    while proc.poll() is None:
      time.sleep(2)
      minutes = (time.time() - t0) / 60
      record_checkpoints(ckpt_dir, seen, minutes)
      if minutes >= args.minutes and not stopped:
        proc.send_signal(signal.SIGTERM)  # Saves a checkpoint at this step, then exits 0.
        stopped = True
    if proc.returncode != 0:
      raise RuntimeError(f"training exited with status {proc.returncode}; see {out.name}")
  record_checkpoints(ckpt_dir, seen, (time.time() - t0) / 60)  # The one saved at the stop.
  log(f"trained {max(seen)} steps in {(time.time() - t0) / 60:.1f} min; checkpoints at "
      + ", ".join(f"{s} ({m:.1f} min)" for s, m in sorted(seen.items())))
  with open(pathlib.Path(workdir) / "harness_checkpoints.json", "w") as f:
    json.dump({"checkpoint_minutes": seen, "train_command": cmd, "budget_minutes": args.minutes},
              f, indent=1)
  return seen, cmd


def evaluate(args, workdir: str, step: int, sampler: Sampler, log) -> tuple[dict, list[str]]:
  cmd = main_command(args.config, workdir, "--mode=eval", "--config.eval.metrics=samples",
                     f"--config.eval.num_samples={args.num_samples}",
                     f"--config.sampling.checkpoint_step={step}",
                     f"--config.sampling.batch_size={args.sample_batch}", "--config.sampling.seed=0",
                     *sampler.overrides(), *args.override)
  log(f"eval: {shlex.join(cmd)}")
  t0 = time.time()
  with open(pathlib.Path(workdir + ".eval.log"), "a") as out:
    subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, check=True)
  with open(pathlib.Path(workdir) / "eval" / f"{step}.json") as f:
    result = json.load(f)
  q = result["samples"][sampler.eval_name(0)]
  log(f"  step {step}, {sampler.label}: FID {q['fid']:.2f}, precision {q['precision']:.3f}, "
      f"recall {q['recall']:.3f} ({(time.time() - t0) / 60:.1f} min)")
  return {"q": q, "floor": result["real_floor"]["fid"], "eval_minutes": (time.time() - t0) / 60}, cmd


def render(out_dir: pathlib.Path) -> None:
  """RESULTS.md (every row of runs.jsonl) and fid_vs_minutes.png."""
  path = out_dir / "runs.jsonl"
  rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
  lines = ["# Quality per CPU-minute: every run", "",
           "Written by `experiments/quality/harness.py` from `runs.jsonl` (the command of every "
           "row is there). FID, precision and recall: the project's classifier features, "
           "N samples vs. the train split of the config's dataset (the classifier trained on "
           "it); the real-data floor is the same protocol on real test images.", "",
           "| run | config | overrides | seed | minutes | steps | sampler | NFE | N | FID | precision | "
           "recall | IS | floor |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    config = pathlib.Path(r.get("config", "configs/mnist.py")).stem
    lines.append(f"| {r['run']} | {config} | {' '.join(r['overrides']) or '-'} | {r['seed']} | "
                 f"{r['minutes']:.1f} | {r['step']} | {r['sampler']} | {r['nfe']} | "
                 f"{r['num_samples']} | {r['fid']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | "
                 f"{r['inception_score']:.2f} | {r['real_floor_fid']:.2f} |")
  (out_dir / "RESULTS.md").write_text("\n".join(lines) + "\n")
  if not rows:
    return
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(6.5, 4))
  series: dict[tuple, list] = {}
  for r in rows:
    series.setdefault((r["run"], r["seed"], r["sampler"]), []).append((r["minutes"], r["fid"]))
  for (run, seed, sampler), pts in sorted(series.items()):
    pts.sort()
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{run} s{seed}, {sampler}")
  floors = {pathlib.Path(r.get("config", "configs/mnist.py")).stem: r["real_floor_fid"]
            for r in rows}
  for (config, floor), ls in zip(sorted(floors.items()), (":", "--", "-.", (0, (1, 3)))):
    ax.axhline(floor, color="k", ls=ls, lw=0.8, label=f"real test images ({config})")
  ax.set_yscale("log")
  ax.set_xlim(0, 1.1 * max(r["minutes"] for r in rows))
  ax.set_xlabel("wall-clock minutes of training (2-core CPU)")
  ax.set_ylabel("FID (classifier features)")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(out_dir / "fid_vs_minutes.png", dpi=120)
  plt.close(fig)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--name", help="the run's name (a row label and the workdir's)")
  p.add_argument("--config", default="configs/mnist.py")
  p.add_argument("--override", action="append", default=[],
                 help="a --config.x.y=v flag for training and eval (repeatable)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--minutes", type=float, default=12.0, help="wall-clock training budget (--eval_only: unused, the run's recorded stop is its budget)")
  p.add_argument("--eval_minutes", default="", help="comma-separated minute marks (default: the end)")
  p.add_argument("--samplers", default="heun:10:trailing,dpm_solver_pp_2m:20:trailing")
  p.add_argument("--num_samples", type=int, default=10_000)
  p.add_argument("--sample_batch", type=int, default=500)
  p.add_argument("--checkpoint_every", type=int, default=250)
  p.add_argument("--workdir_root", default="/tmp/ddpm_quality")
  p.add_argument("--out", default=str(HERE))
  p.add_argument("--render", action="store_true", help="only re-render RESULTS.md and the plot")
  p.add_argument("--eval_only", action="store_true",
                 help="score an existing run's workdir (trained by this harness) again")
  return p.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  out_dir = pathlib.Path(args.out)
  if args.render:
    render(out_dir)
    return
  if not args.name:
    sys.exit("harness: error: --name is required (the run's label)")
  try:
    samplers = parse_samplers(args.samplers)
    minute_marks(args.eval_minutes, None)  # Bad marks fail before any training.
    for s in samplers:  # A guide must be a checkpoint the run keeps.
      off = [g for g in s.guide_steps if g % args.checkpoint_every]
      if s.autoguidance_weight and not args.eval_only and off:
        raise ValueError(f"sampler {s.label}: guide step {off[0]} is not a multiple of "
                         f"--checkpoint_every={args.checkpoint_every}, so no checkpoint is kept there")
  except ValueError as e:
    sys.exit(f"harness: error: {e}")
  workdir = os.path.join(args.workdir_root, f"{args.name}_seed{args.seed}")
  if args.eval_only:
    record = pathlib.Path(workdir) / "harness_checkpoints.json"
    if not record.is_file():
      sys.exit(f"harness: error: --eval_only needs {record}, written when this harness trained it")
  elif os.path.exists(workdir):
    sys.exit(f"harness: error: {workdir} exists; a run starts from nothing (remove it or rename)")
  os.makedirs(args.workdir_root, exist_ok=True)
  log_path = pathlib.Path(workdir + ".harness.log")
  def log(msg):
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, flush=True)
    with open(log_path, "a") as f:
      f.write(line + "\n")
  if args.eval_only:
    with open(pathlib.Path(workdir) / "harness_checkpoints.json") as f:
      record = json.load(f)
    checkpoints = {int(k): v for k, v in record["checkpoint_minutes"].items()}
    train_cmd = record["train_command"]
    budget_minutes = record.get("budget_minutes")  # Absent in records written before 2026-12-04.
  else:
    checkpoints, train_cmd = train(args, workdir, log)
    budget_minutes = args.minutes
  budget = recorded_budget(checkpoints) if args.eval_only else args.minutes
  marks = minute_marks(args.eval_minutes, budget)
  for minutes in marks:
    step = checkpoint_at(checkpoints, minutes, budget)
    if step is None:
      log(f"no checkpoint by {minutes} min; skipped")
      continue
    for sampler in samplers:
      if sampler.autoguidance_weight and not 0 <= sampler.guide_steps[-1] < step:
        log(f"step {step}, {sampler.label}: the guide must be an earlier checkpoint; skipped")
        continue
      missing = [g for g in sampler.guide_steps if g not in checkpoints]
      if sampler.autoguidance_weight and missing:
        log(f"step {step}, {sampler.label}: no checkpoint at step {missing[0]}; skipped")
        continue
      res, eval_cmd = evaluate(args, workdir, step, sampler, log)
      q = res["q"]
      row = dict(run=args.name, config=args.config, overrides=args.override, seed=args.seed,
                 budget_minutes=budget_minutes, minutes=round(checkpoints[step], 2), step=step,
                 sampler=sampler.label, nfe=sampler.nfe, num_samples=q["num_images"],
                 fid=q["fid"], precision=q["precision"], recall=q["recall"],
                 inception_score=q["inception_score"], real_floor_fid=res["floor"],
                 eval_minutes=round(res["eval_minutes"], 2), train_command=shlex.join(train_cmd),
                 eval_command=shlex.join(eval_cmd), date=time.strftime("%Y-%m-%d %H:%M"))
      with open(out_dir / "runs.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
      render(out_dir)


if __name__ == "__main__":
  main()
