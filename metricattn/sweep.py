"""Run a grid of configs over seeds, one workdir per point; finished runs are skipped.

  python -m metricattn.sweep --config=configs/moons_ipn.py \
      --grid attention=softmax,l2,metric optimizer.lr=3e-4,1e-3 --seeds 0:5 \
      --root runs/moons [--jobs 2] [--set train.steps=500 ...]

Each point runs `python -m metricattn.main` in its own process, in
ROOT/<key>=<value>/.../seed=<s>. A `--grid` key without a dot is a config argument (after
`:`); a dotted key (`optimizer.lr`) is any config value, typed as the config types it.
`--set` adds `--config.KEY=VALUE` overrides to every run. Every grid point's config is built
and checked before anything is launched. A run whose workdir holds a readable summary.json
is skipped; an interrupted one resumes from its checkpoint. While runs train, one progress
line per running job (every 10 s) shows steps done, steps/s and time left.

With `--space`, `--sampler`, `--storage` or `--study` the sweep is an Optuna study instead
(random, TPE or grid search, workers sharing one storage, pruning): `metricattn.study`.

With `--vmap-seeds` all seeds of a grid point train in one process and one compiled
program (the step vmapped over seeds; for small models such as the IPN), with the same
workdir layout; the point's checkpoints are in ROOT/<key>=<value>/checkpoints.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from metricattn import runs as runs_lib
from metricattn.cli import fail
from metricattn.errors import UserError


def parse_seeds(text: str) -> list[int]:
  """'0:5' -> [0..4]; '3' -> [3]; '0,2,7' -> [0, 2, 7]; anything else is a UserError."""
  try:
    if ":" in text:
      lo, hi = text.split(":")
      seeds = list(range(int(lo), int(hi)))
    else:
      seeds = [int(s) for s in text.split(",")]
  except ValueError:
    raise UserError(f"--seeds {text!r} is not a seed list; use '0:5', '3' or '0,2,7'") from None
  if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
    raise UserError(f"--seeds {text!r} must give distinct seeds >= 0; use '0:5', '3' or "
                    "'0,2,7'")
  return seeds


def parse_grid(grid: list[str]) -> list[tuple[str, list[str]]]:
  """['attention=softmax,l2', 'optimizer.lr=1e-3,3e-3'] -> [(key, values), ...]."""
  out = []
  for item in grid:
    key, sep, vals = item.partition("=")
    values = vals.split(",")
    if not sep or not key or not all(values) or any("=" in v or "/" in v for v in values):
      raise UserError(f"--grid {item!r} is not of the form key=v1,v2,... (non-empty values "
                      "without '=' or '/')")
    if key in (k for k, _ in out) or len(set(values)) != len(values):
      raise UserError(f"--grid {item!r} repeats a key or a value")
    out.append((key, values))
  return out


def grid_points(grid: list[str]) -> list[dict[str, str]]:
  keys, values = zip(*parse_grid(grid)) if grid else ((), ())
  return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def split_point(point: dict[str, str]) -> tuple[list[str], list[str]]:
  """(config arguments 'k=v' for after ':', overrides 'a.b=v') of one grid point."""
  args = [f"{k}={v}" for k, v in point.items() if "." not in k]
  return args, [f"{k}={v}" for k, v in point.items() if "." in k]


def point_config(config: str, point: dict[str, str], overrides: list[str]):
  """The config one grid point's runs train with, built here as `main` will build it."""
  from metricattn.config_utils import load_config_file, set_override
  base, _, base_args = config.partition(":")
  args, dotted = split_point(point)
  c = load_config_file(base, ",".join([a for a in [base_args] if a] + args))
  for item in [*overrides, *dotted]:
    key, sep, text = item.partition("=")
    if not sep:
      raise UserError(f"--set {item!r} is not of the form key=value")
    set_override(c, key, text)
  return c


def check_points(config: str, points: list[dict[str, str]], overrides: list[str],
                 what: str = "grid point") -> list:
  """Builds and checks every point's config before anything runs; returns the configs.
  Errors name the point as `what` and its values."""
  from metricattn.attention import check_kind
  from metricattn.train import check_config
  configs = []
  for point in points:
    where = " ".join([what, *(f"{k}={v}" for k, v in point.items())]) if point \
        else "the base config"
    try:
      if not Path(config.partition(":")[0]).is_file():
        raise UserError(f"config file {config.partition(':')[0]} does not exist")
      c = point_config(config, point, overrides)
      check_config(c, split_batch=False)
      if "attention" in c.get("model", {}):
        check_kind(c.model.attention)
    except UserError as e:
      raise UserError(f"{where}: {e}") from None
    configs.append(c)
  return configs


def plan(config: str, grid: list[str], seeds: list[int], root: Path,
         overrides: list[str], vmap_seeds: bool = False) -> list[tuple[list[Path], list[str]]]:
  """(workdirs, command) for every process: one per grid point and seed, or per grid point
  with `vmap_seeds`."""
  runs = []
  base, _, base_args = config.partition(":")
  for point in grid_points(grid):
    args, dotted = split_point(point)
    point_dir = runs_lib.point_dir(root, point)
    arg = ",".join([a for a in [base_args] if a] + args)
    head = [sys.executable, "-m", "metricattn.main", f"--config={base}:{arg}" if arg
            else f"--config={base}"]
    tail = [f"--config.{o}" for o in [*overrides, *dotted]]
    if vmap_seeds:
      runs.append(([runs_lib.seed_dir(point_dir, s) for s in seeds],
                   head + [f"--workdir={point_dir}", f"--seeds={','.join(map(str, seeds))}"] + tail))
      continue
    for seed in seeds:
      workdir = runs_lib.seed_dir(point_dir, seed)
      runs.append(([workdir], head + [f"--workdir={workdir}", f"--config.seed={seed}"] + tail))
  return runs


def run_one(workdirs: list[Path], cmd: list[str], jobs: dict) -> tuple[Path, int, float]:
  """Runs one process; its output goes to log.txt in its (first) workdir's parent or itself."""
  logdir = workdirs[0] if len(workdirs) == 1 else workdirs[0].parent
  logdir.mkdir(parents=True, exist_ok=True)
  t = time.perf_counter()
  with open(logdir / "log.txt", "a") as log:
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    jobs[logdir] = (workdirs[0], t, last_step(workdirs[0]))
    rc = proc.wait()
  jobs.pop(logdir, None)
  return logdir, rc, time.perf_counter() - t


def last_step(workdir: Path) -> int:
  """The newest step in workdir/metrics.jsonl (0 when none yet)."""
  try:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
  except OSError:
    return 0
  for line in reversed(lines):
    if line.startswith('{"step": '):
      return int(line[9:].split(",")[0])
  return 0


def progress_line(name: str, step: int, total: int, start_step: int, seconds: float) -> str:
  rate = (step - start_step) / seconds if seconds > 0 and step > start_step else 0.0
  left = f"{(total - step) / rate:.0f} s left" if rate else "starting"
  return f"  {name}: step {step}/{total}, {rate:.1f} steps/s, {left}"


def show_progress(jobs: dict, totals: dict, root: Path, stop: threading.Event,
                  every: float) -> None:
  """Every `every` seconds, one line per running job: steps done, steps/s since the job
  started (its start-up and compilation included), time left at that speed."""
  while not stop.wait(every):
    for logdir, (workdir, t0, step0) in list(jobs.items()):
      print(progress_line(str(logdir.relative_to(root)), last_step(workdir), totals[logdir],
                          step0, time.perf_counter() - t0), flush=True)


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", required=True, help="config file, optionally with :args")
  p.add_argument("--grid", nargs="*", default=[],
                 help="key=v1,v2: config arguments (key) or any config value (a.b)")
  p.add_argument("--seeds", default="0", help="'0:5', '3' or '0,2,7'")
  p.add_argument("--root", required=True, type=Path, help="parent of the run workdirs")
  p.add_argument("--jobs", type=int, default=1, help="runs in parallel")
  p.add_argument("--set", nargs="*", default=[], help="KEY=VALUE config overrides")
  p.add_argument("--vmap-seeds", action="store_true",
                 help="train all seeds of a grid point in one vmapped program")
  p.add_argument("--progress-every", type=float, default=10.0,
                 help="seconds between progress lines (0: none)")
  o = p.add_argument_group("Optuna studies (metricattn/study.py)")
  o.add_argument("--space", action="append", default=[],
                 help="KEY=choice(a,b)|int(lo,hi[,step])|uniform(lo,hi)|loguniform(lo,hi); "
                 "repeat per key")
  o.add_argument("--space-file", type=Path, help="one --space item per line (# comments)")
  o.add_argument("--sampler", help="grid, random or tpe (default: tpe; grid with --grid)")
  o.add_argument("--trials", type=int, help="trials of the study in all (grid: its size)")
  o.add_argument("--objective", default="val/accuracy",
                 help="SPLIT/METRIC of summary.json to optimise, the mean over --seeds "
                 "(default: val/accuracy)")
  o.add_argument("--direction", default="max", help="max or min")
  o.add_argument("--storage", help="journal file (default ROOT/optuna.journal) or an "
                 "SQLAlchemy URL: sqlite:///F.db, postgresql://..., mysql+pymysql://...")
  o.add_argument("--study", help="study name (default: the root's name)")
  o.add_argument("--workers", type=int, default=1, help="local worker processes")
  o.add_argument("--pruner", default="none", help="none, median or hyperband")
  o.add_argument("--heartbeat", type=float, default=20.0,
                 help="seconds between a worker's heartbeats; a trial silent for 3 of them "
                 "is retried by another worker")
  o.add_argument("--worker-name", help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if (a.space or a.space_file or a.sampler or a.storage or a.study or a.trials is not None
      or a.workers != 1 or a.pruner != "none"):
    from metricattn import study
    a.sampler = a.sampler or ("grid" if a.grid and not (a.space or a.space_file) else "tpe")
    return study.main(a, sys.argv[1:] if argv is None else list(argv))
  try:
    seeds = parse_seeds(a.seeds)
    points = grid_points(a.grid)
    configs = check_points(a.config, points, a.set)
    if a.jobs < 1:
      raise UserError(f"--jobs must be at least 1; got {a.jobs}")
  except UserError as e:
    fail(str(e))
  runs = plan(a.config, a.grid, seeds, a.root, a.set, a.vmap_seeds)
  per_point = 1 if a.vmap_seeds else len(seeds)
  totals = {}
  for i, (w, _) in enumerate(runs):
    totals[w[0] if len(w) == 1 else w[0].parent] = configs[i // per_point].train.steps
  todo = [(w, c) for w, c in runs if not all(runs_lib.finished(d) for d in w)]
  print(f"{len(runs)} runs, {len(runs) - len(todo)} already finished, {len(todo)} to run "
        f"with {a.jobs} job(s)", flush=True)
  failed, jobs, stop, t0 = 0, {}, threading.Event(), time.perf_counter()
  if a.progress_every > 0:
    threading.Thread(target=show_progress, args=(jobs, totals, a.root, stop, a.progress_every),
                     daemon=True).start()
  try:
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
      for i, (workdir, rc, secs) in enumerate(pool.map(lambda r: run_one(*r, jobs), todo), 1):
        status = "ok" if rc == 0 else f"FAILED (exit {rc}, see {workdir / 'log.txt'})"
        print(f"[{i}/{len(todo)}] {workdir} {status} {secs:.1f}s", flush=True)
        failed += rc != 0
  except KeyboardInterrupt:
    print("sweep interrupted: running jobs stop after a checkpoint; rerun the same command "
          "to finish", file=sys.stderr)
    return 130
  finally:
    stop.set()
  print(f"sweep: {len(todo) - failed} of {len(todo)} runs ok in "
        f"{time.perf_counter() - t0:.0f} s", flush=True)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
