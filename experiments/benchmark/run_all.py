"""Runs ddpm and its PyTorch peers side by side on this machine; writes results.json and RESULTS.md.

  bash experiments/benchmark/setup_peers.sh          # once: the peers' venv
  python experiments/benchmark/run_all.py            # the benchmark (from the repository root)
  python experiments/benchmark/run_all.py --quick    # smoke run: 2 timed steps, tiny sampler

Every measurement (implementation, mode, task, batch, image size) runs in its own process, one
after another, so they never overlap and each peak RSS is that configuration's alone: ddpm's
(ours.py) with this Python, the peers' (peers.py) with the venv's. Each prints one JSON line;
run_all adds the machine (CPU model and flags, cores, memory, load), the versions, and a
jit-compiled fp32 matmul GFLOP/s measured in the same run as the reference peak.

The lists are flags, so a scaling sweep reuses this as it is, e.g.
  python experiments/benchmark/run_all.py --batches 32,64,128,256 --image-sizes 28,32,64 \\
      --sample-steps 10,20,50,100 --out /tmp/sweep
--render-only re-writes RESULTS.md from an existing results.json.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
PEERS = ("diffusers", "lucidrains")
PEER_MODES = ("eager", "compile")
DDPM_MODES = ("jit", "jit-eigen")
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "amx_tile", "amx_bf16", "amx_int8")


def csv(type_):
  return lambda s: [type_(v) for v in s.split(",") if v]


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="\n".join(__doc__.split("\n")[1:]))
  p.add_argument("--quick", action="store_true",
                 help="smoke run: 0 warm-up and 2 timed steps, DDIM 2 and 4 steps, small matmul; "
                      "writes to experiments/benchmark/smoke/ unless --out is given")
  p.add_argument("--impls", type=csv(str), default=["ddpm", *PEERS])
  p.add_argument("--modes", type=csv(str), default=list(PEER_MODES), help="the peers' modes")
  p.add_argument("--ddpm-modes", type=csv(str), default=list(DDPM_MODES),
                 help="ddpm's modes: jit (the package's XLA CPU flags: YNNPACK convolutions), "
                      "jit-eigen (DDPM_NO_XLA_CPU_FLAGS=1: XLA's default Eigen convolutions)")
  p.add_argument("--max-batch-pixels", type=int, default=None,
                 help="skip training runs whose batch x image_size^2 exceeds this (memory)")
  p.add_argument("--batches", type=csv(int), default=[64, 128], help="training batches")
  p.add_argument("--image-sizes", type=csv(int), default=[32])
  p.add_argument("--sample-batch", type=int, default=64,
                 help="the sampling batch of the main table and the peer ratios")
  p.add_argument("--sample-batches", type=csv(int), default=None,
                 help="sampling batches to measure [--sample-batch]")
  p.add_argument("--sample-repeats", type=int, default=None,
                 help="ddpm's timed sampler runs per step count (median) [2]")
  p.add_argument("--sample-steps", type=csv(int), default=None, help="DDIM step counts [20,50]")
  p.add_argument("--no-sample", action="store_true", help="skip the sampling measurements")
  p.add_argument("--warmup", type=int, default=None, help="untimed steps after the first [3]")
  p.add_argument("--steps", type=int, default=None, help="timed training steps [15]; >= 10")
  p.add_argument("--threads", type=int, default=2, help="the peers' torch threads")
  p.add_argument("--matmul-size", type=int, default=None, help="[2048]")
  p.add_argument("--peer-python", default=str(HERE / ".venv" / "bin" / "python"))
  p.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
  p.add_argument("--out", default=None, help="folder for results.json and RESULTS.md "
                                             "[experiments/benchmark]")
  p.add_argument("--render-only", action="store_true",
                 help="re-write RESULTS.md from the folder's results.json")
  args = p.parse_args(argv)
  quick = args.quick
  defaults = dict(warmup=0 if quick else 3, steps=2 if quick else 15,
                  sample_steps=[2, 4] if quick else [20, 50],
                  matmul_size=1024 if quick else 2048)
  for k, v in defaults.items():
    if getattr(args, k) is None:
      setattr(args, k, v)
  if args.out is None:
    args.out = str(HERE / "smoke") if quick else str(HERE)
  if args.sample_batches is None:
    args.sample_batches = [args.sample_batch]
  if not quick and args.steps < 10:
    p.error(f"--steps={args.steps}: the benchmark's medians need >= 10 timed steps "
            "(--quick is the smoke run).")
  unknown = [i for i in args.impls if i not in ("ddpm", *PEERS)]
  if unknown or any(m not in PEER_MODES for m in args.modes):
    p.error(f"--impls from ddpm,{','.join(PEERS)}; --modes from {','.join(PEER_MODES)}.")
  return args


# --- the plan -----------------------------------------------------------------------------

def plan(args) -> list[dict]:
  """Every measurement, in the order they run: matmul references first, then per image size
  and implementation its training batches and its sampling."""
  runs = []
  if "ddpm" in args.impls:
    runs.append(dict(impl="ddpm", mode="jit", task="matmul", batch=0, image_size=0))
  if any(i in PEERS for i in args.impls):
    runs.append(dict(impl="torch", mode="eager", task="matmul", batch=0, image_size=0))
  for size in args.image_sizes:
    for impl in args.impls:
      for mode in (args.ddpm_modes if impl == "ddpm" else args.modes):
        for batch in args.batches:
          if args.max_batch_pixels and batch * size * size > args.max_batch_pixels:
            continue
          runs.append(dict(impl=impl, mode=mode, task="train", batch=batch, image_size=size))
        for sample_batch in ([] if args.no_sample else args.sample_batches):
          runs.append(dict(impl=impl, mode=mode, task="sample", batch=sample_batch,
                           image_size=size))
  return runs


def command(run: dict, args) -> list[str]:
  common = ["--task", run["task"], "--steps", str(args.steps if run["task"] != "matmul"
                                                  else (3 if args.quick else 10))]
  if run["task"] == "matmul":
    common += ["--matmul-size", str(args.matmul_size)]
  else:
    common += ["--batch", str(run["batch"]), "--image-size", str(run["image_size"]),
               "--warmup", str(args.warmup),
               "--sample-steps", ",".join(map(str, args.sample_steps))]
  if run["impl"] == "ddpm":
    repeats = 1 if args.quick else args.sample_repeats
    extra = ["--sample-repeats", str(repeats)] if repeats else []
    return [sys.executable, str(HERE / "ours.py"), "--mode", run["mode"], *common, *extra]
  impl = "torch" if run["task"] == "matmul" else run["impl"]
  return [args.peer_python, str(HERE / "peers.py"), "--impl", impl, "--mode", run["mode"],
          "--threads", str(args.threads), *common]


def execute(run: dict, args) -> dict:
  cmd = command(run, args)
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
  if run["impl"] != "ddpm":
    env["OMP_NUM_THREADS"] = str(args.threads)
  elif run["mode"] == "jit-eigen":
    env["DDPM_NO_XLA_CPU_FLAGS"] = "1"  # ddpm/runtime/xla_flags.py: XLA's default CPU convolutions.
  label = f"{run['impl']} {run['mode']} {run['task']} batch {run['batch']} size {run['image_size']}"
  print(f"[{time.strftime('%H:%M:%S')}] {label}: {' '.join(cmd)}", flush=True)
  t0 = time.time()
  try:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=args.timeout)
  except subprocess.TimeoutExpired:
    return {**run, "error": f"timed out after {args.timeout:.0f} s", "wall_s": time.time() - t0}
  wall = time.time() - t0
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode != 0 or not lines:
    print(proc.stderr[-3000:], file=sys.stderr)
    return {**run, "error": f"exit code {proc.returncode}", "stderr_tail": proc.stderr[-3000:],
            "wall_s": wall}
  result = json.loads(lines[-1])
  result.update(wall_s=wall, command=" ".join(cmd))
  summary = {k: result[k] for k in ("images_per_s", "sample_s_per_step", "gflops",
                                    "first_step_s", "peak_rss_mb") if k in result}
  print(f"  {wall:.0f} s: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items()), flush=True)
  return result


# --- machine and versions -------------------------------------------------------------------

def machine_info() -> dict:
  info = {"platform": platform.platform(), "python": platform.python_version(),
          "cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0))}
  try:
    cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
    model = [l.split(":", 1)[1].strip() for l in cpuinfo.splitlines() if l.startswith("model name")]
    flags = next(l.split(":", 1)[1].split() for l in cpuinfo.splitlines() if l.startswith("flags"))
    info.update(cpu_model=model[0] if model else "?", cpu_flags=[f for f in CPU_FLAGS if f in flags])
    mem = next(l for l in pathlib.Path("/proc/meminfo").read_text().splitlines()
               if l.startswith("MemTotal"))
    info["mem_total_gib"] = round(int(mem.split()[1]) / 2**20, 1)
  except (OSError, StopIteration):
    pass
  return info


def loadavg() -> list[float]:
  try:
    return [float(v) for v in pathlib.Path("/proc/loadavg").read_text().split()[:3]]
  except OSError:
    return []


def versions(args) -> dict:
  out = {}
  for name in ("jax", "jaxlib", "flax", "optax", "numpy"):
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  try:
    out["ddpm_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                        capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    out["ddpm_dirty"] = bool(dirty)
  except OSError:
    pass
  if any(i in PEERS for i in args.impls) and os.path.exists(args.peer_python):
    code = ("import importlib.metadata as m, json; print(json.dumps({n: m.version(n) for n in "
            "('torch', 'diffusers', 'denoising-diffusion-pytorch')}))")
    proc = subprocess.run([args.peer_python, "-c", code], capture_output=True, text=True)
    if proc.returncode == 0:
      out.update(json.loads(proc.stdout.strip().splitlines()[-1]))
  return out


# --- RESULTS.md -----------------------------------------------------------------------------

def _f(v, fmt="{:.1f}"):
  return "—" if v is None else fmt.format(v)


def marginal_s_per_step(sample: dict) -> float | None:
  """(time of the longest run - time of the shortest) / (their step difference): the cost of
  one more step, without the fixed cost of a sampler call."""
  if not sample or len(sample) < 2:
    return None
  lo, hi = min(sample, key=int), max(sample, key=int)
  return (sample[hi]["run_s"] - sample[lo]["run_s"]) / (int(hi) - int(lo))


def render(data: dict) -> str:
  rs = data["results"]
  m, v, a = data["machine"], data["versions"], data["args"]
  ok = [r for r in rs if "error" not in r]
  matmul = {r["impl"]: r for r in ok if r["task"] == "matmul"}
  peak = matmul.get("ddpm", {}).get("gflops")
  train = [r for r in ok if r["task"] == "train"]
  sample = {(r["impl"], r["mode"], r["image_size"], r["batch"]): r
            for r in ok if r["task"] == "sample"}
  sb = a.get("sample_batch")
  lines = []
  if a.get("quick"):
    lines += ["> **SMOKE RUN (--quick): 2 timed steps, tiny sampler. Not a measurement; do not "
              "quote these numbers.**", ""]
  lines += ["# ddpm vs. PyTorch peers on the same CPU", "",
            f"Run {data['started']} to {data['finished']} (`{data['command']}`).", "",
            "## Machine and versions", "",
            f"- CPU: {m.get('cpu_model', '?')}, {m.get('cpu_count')} cores "
            f"({m.get('affinity')} usable), {m.get('mem_total_gib')} GiB; flags: "
            f"{', '.join(m.get('cpu_flags', []))}",
            f"- load average (1, 5, 15 min) at start {data['load_start']}, at end {data['load_end']}",
            f"- {m.get('platform')}, Python {m.get('python')}",
            f"- ddpm {v.get('ddpm_commit')}{' (uncommitted changes)' if v.get('ddpm_dirty') else ''}: "
            f"jax {v.get('jax')}, jaxlib {v.get('jaxlib')}, flax {v.get('flax')}, "
            f"optax {v.get('optax')}",
            f"- peers: torch {v.get('torch')} ({a.get('threads')} threads), diffusers "
            f"{v.get('diffusers')}, denoising_diffusion_pytorch "
            f"{v.get('denoising-diffusion-pytorch')}"]
  if peak:
    lines.append(f"- reference peak: jit-compiled fp32 matmul {matmul['ddpm']['matmul_size']}^2 in "
                 f"JAX: **{peak:.1f} GFLOP/s**" +
                 (f"; torch.matmul ({a.get('threads')} threads): {matmul['torch']['gflops']:.1f} GFLOP/s"
                  if "torch" in matmul else ""))
  if data.get("warning"):
    lines += ["", f"**Warning:** {data['warning']}"]
  lines += ["", "## Training and sampling", "",
            f"Training: median of {a.get('steps')} timed steps after {a.get('warmup')} warm-up steps "
            "(and the first). Sampling: DDIM (eta 0) at batch "
            f"{a.get('sample_batch')}, s/step = time of the {max(a.get('sample_steps', [0]))}-step "
            "run / steps. First step: compile (jit / torch.compile) + one step; eager: one step.",
            "", "| implementation | mode | image | batch | train img/s | fwd GFLOP/img | "
            "achieved GFLOP/s | % of matmul peak | sample s/step @" + str(a.get("sample_batch")) +
            " | first step s (compile) | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in train:
    s = sample.get((r["impl"], r["mode"], r["image_size"], sb), {})
    pct = 100 * r["achieved_gflops"] / peak if peak else None
    lines.append(
        f"| {r['impl']} | {r['mode']} | {r['image_size']} | {r['batch']} | {r['images_per_s']:.1f} "
        f"| {r['fwd_flops_per_image'] / 1e9:.3f} | {r['achieved_gflops']:.1f} | {_f(pct)} "
        f"| {_f(s.get('sample_s_per_step'), '{:.3f}')} | {r['first_step_s']:.1f} "
        f"| {r['peak_rss_mb']:.0f} |")
  # Ratios: ddpm / each peer configuration.
  ours = {(r["image_size"], r["batch"]): r for r in train
          if r["impl"] == "ddpm" and r["mode"] == "jit"}
  ratio_rows = []
  for r in train:
    o = ours.get((r["image_size"], r["batch"]))
    if r["impl"] == "ddpm" or o is None:
      continue
    so = sample.get(("ddpm", "jit", r["image_size"], sb), {}).get("sample_s_per_step")
    sp = sample.get((r["impl"], r["mode"], r["image_size"], sb), {}).get("sample_s_per_step")
    ratio_rows.append(
        f"| {r['impl']} | {r['mode']} | {r['image_size']} | {r['batch']} "
        f"| {o['images_per_s'] / r['images_per_s']:.2f}x "
        f"| {_f(sp / so if so and sp else None, '{:.2f}x')} |")
  if ratio_rows:
    lines += ["", "### ddpm relative to each peer", "",
              "Training: ddpm img/s / peer img/s. Sampling: peer s/step / ddpm s/step. "
              "Above 1x: ddpm is faster.", "",
              "| peer | mode | image | batch | training | sampling |", "|---|---|---|---|---|---|",
              *ratio_rows]
  if sample:
    lines += ["", "## Sampling", "",
              "Marginal s/step: (longest run - shortest run) / step difference, the cost of one "
              "more step without the fixed cost of a call. Compile: ddpm's ahead-of-time "
              "compilation of the whole sampler (one `lax.scan`, so it does not grow with the "
              "steps); the peers' first run includes torch.compile's.", "",
              "| implementation | mode | image | batch | DDIM steps | run s | s/step | "
              "marginal s/step | compile s | first run s | peak RSS MB |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (impl, mode, size, _), r in sample.items():
      marg = marginal_s_per_step(r["sample"])
      for n, sr in sorted(r["sample"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {impl} | {mode} | {size} | {r['batch']} | {n} | {sr['run_s']:.2f} "
                     f"| {sr['s_per_step']:.3f} | {_f(marg, '{:.3f}')} "
                     f"| {_f(sr.get('compile_s'), '{:.1f}')} | {sr['first_run_s']:.1f} "
                     f"| {r['peak_rss_mb']:.0f} |")
  params = {}
  for r in ok:
    if "params" in r:
      params.setdefault((r["impl"], r["image_size"]), r)
  if params:
    lines += ["", "## Workloads", "",
              "| implementation | image | parameters | fwd GFLOP/img (counted) | "
              "fwd+bwd GFLOP/img | XLA: fwd / train step GFLOP/img |", "|---|---|---|---|---|---|"]
    for (impl, size), r in sorted(params.items()):
      xla_train = next((t.get("train_flops_per_image_xla") for t in train
                        if t["impl"] == impl and t["image_size"] == size), None)
      xla = (f"{r['fwd_flops_per_image_xla'] / 1e9:.3f} / {_f(xla_train and xla_train / 1e9, '{:.3f}')}"
             if "fwd_flops_per_image_xla" in r else "—")
      counted_train = r.get("train_flops_per_image_counted")
      lines.append(f"| {impl} | {size} | {r['params']:,} | {r['fwd_flops_per_image'] / 1e9:.3f} "
                   f"| {_f(counted_train and counted_train / 1e9, '{:.3f}')} | {xla} |")
  errors = [r for r in rs if "error" in r]
  if errors:
    lines += ["", "## Failed measurements", ""]
    lines += [f"- {r['impl']} {r['mode']} {r['task']} batch {r['batch']}: {r['error']}"
              for r in errors]
  lines += ["", "## How it is measured", "",
            "See [README.md](README.md). In short: random MNIST-shaped images (real data loading "
            "is not measured); t ~ Uniform{0..999}, eps loss, Adam 2e-4, gradient clipping at 1 "
            "and EMA in every implementation; forward FLOPs per image counted the same way for "
            "all (2 x multiply-adds of matmuls, convolutions and attention: torch's "
            "FlopCounterMode for the peers, the same count over ddpm's jaxpr), achieved GFLOP/s "
            "= 3 x forward FLOPs x img/s (backward ~ 2 x forward); peak RSS = ru_maxrss of the "
            "measurement's own process.", ""]
  return "\n".join(lines)


HANDWRITTEN = "<!-- Hand-written below this line: kept when RESULTS.md is re-written. -->"


def write_results_md(path: pathlib.Path, data: dict) -> None:
  """RESULTS.md = render(data), plus whatever follows HANDWRITTEN in the existing file."""
  text = render(data)
  if path.exists() and HANDWRITTEN in (old := path.read_text()):
    text = text.rstrip("\n") + "\n\n" + old[old.index(HANDWRITTEN):]
  path.write_text(text)


def main(argv=None) -> None:
  args = parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  if args.render_only:
    data = json.loads((out / "results.json").read_text())
    write_results_md(out / "RESULTS.md", data)
    print(f"wrote {out / 'RESULTS.md'}")
    return
  if any(i in PEERS for i in args.impls) and not os.path.exists(args.peer_python):
    sys.exit(f"{args.peer_python} is missing: run `bash experiments/benchmark/setup_peers.sh` "
             "first (or pass --impls ddpm).")
  data = {"command": " ".join([pathlib.Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
          "started": datetime.datetime.now().isoformat(timespec="seconds"),
          "args": vars(args), "machine": machine_info(), "versions": versions(args),
          "load_start": loadavg()}
  busy = data["load_start"] and data["load_start"][0] > 0.5
  if busy:
    data["warning"] = (f"the machine was busy when the run started (1-min load "
                       f"{data['load_start'][0]}); timings on a busy machine are not comparable "
                       "(torch's OpenMP threads in particular slow down many times over).")
    print("WARNING: " + data["warning"], file=sys.stderr)
  runs = plan(args)
  print(f"{len(runs)} measurements", flush=True)
  data["results"] = []
  for run in runs:
    data["results"].append(execute(run, args))
    data["load_end"] = loadavg()
    data["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    (out / "results.json").write_text(json.dumps(data, indent=1))  # After every measurement.
  write_results_md(out / "RESULTS.md", data)
  failed = sum("error" in r for r in data["results"])
  print(f"wrote {out / 'results.json'} and {out / 'RESULTS.md'}"
        + (f"; {failed} measurement(s) failed" if failed else ""))
  if failed:
    sys.exit(1)


if __name__ == "__main__":
  main()
