"""Run a grid of configs over seeds, one workdir per point; finished runs are skipped.

  python -m metricattn.sweep --config=configs/moons_ipn.py \
      --grid attention=softmax,l2,metric --seeds 0:5 --root runs/moons [--jobs 2] \
      [--set train.steps=500 ...]

Each point runs `python -m metricattn.main` in its own process, in
ROOT/<key>=<value>/.../seed=<s>. `--grid` values become config arguments (after `:`);
`--set` adds `--config.KEY=VALUE` overrides to every run. A run whose workdir has
summary.json is skipped; an interrupted one resumes from its checkpoint.

With `--vmap-seeds` all seeds of a grid point train in one process and one compiled
program (the step vmapped over seeds; for small models such as the IPN), with the same
workdir layout; the point's checkpoints are in ROOT/<key>=<value>/checkpoints.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def parse_seeds(text: str) -> list[int]:
  """'0:5' -> [0..4]; '3' -> [3]; '0,2,7' -> [0, 2, 7]."""
  if ":" in text:
    lo, hi = text.split(":")
    return list(range(int(lo), int(hi)))
  return [int(s) for s in text.split(",")]


def grid_points(grid: list[str]) -> list[dict[str, str]]:
  keys, values = [], []
  for item in grid:
    key, sep, vals = item.partition("=")
    if not sep or not vals:
      raise SystemExit(f"error: --grid {item!r} is not of the form key=v1,v2,...")
    keys.append(key)
    values.append(vals.split(","))
  return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def plan(config: str, grid: list[str], seeds: list[int], root: Path,
         overrides: list[str], vmap_seeds: bool = False) -> list[tuple[list[Path], list[str]]]:
  """(workdirs, command) for every process: one per grid point and seed, or per grid point
  with `vmap_seeds`."""
  runs = []
  base, _, base_args = config.partition(":")
  for point in grid_points(grid):
    args = ",".join([a for a in [base_args] if a] + [f"{k}={v}" for k, v in point.items()])
    point_dir = root.joinpath(*[f"{k}={v}" for k, v in point.items()])
    head = [sys.executable, "-m", "metricattn.main", f"--config={base}:{args}"]
    tail = [f"--config.{o}" for o in overrides]
    if vmap_seeds:
      runs.append(([point_dir / f"seed={s}" for s in seeds],
                   head + [f"--workdir={point_dir}", f"--seeds={','.join(map(str, seeds))}"] + tail))
      continue
    for seed in seeds:
      workdir = point_dir / f"seed={seed}"
      runs.append(([workdir], head + [f"--workdir={workdir}", f"--config.seed={seed}"] + tail))
  return runs


def run_one(workdirs: list[Path], cmd: list[str]) -> tuple[Path, int, float]:
  """Runs one process; its output goes to log.txt in its (first) workdir's parent or itself."""
  logdir = workdirs[0] if len(workdirs) == 1 else workdirs[0].parent
  logdir.mkdir(parents=True, exist_ok=True)
  t = time.perf_counter()
  with open(logdir / "log.txt", "a") as log:
    rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
  return logdir, rc, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", required=True, help="config file, optionally with :args")
  p.add_argument("--grid", nargs="*", default=[], help="key=v1,v2 config arguments")
  p.add_argument("--seeds", default="0", help="'0:5', '3' or '0,2,7'")
  p.add_argument("--root", required=True, type=Path, help="parent of the run workdirs")
  p.add_argument("--jobs", type=int, default=1, help="runs in parallel")
  p.add_argument("--set", nargs="*", default=[], help="KEY=VALUE config overrides")
  p.add_argument("--vmap-seeds", action="store_true",
                 help="train all seeds of a grid point in one vmapped program")
  a = p.parse_args(argv)
  runs = plan(a.config, a.grid, parse_seeds(a.seeds), a.root, a.set, a.vmap_seeds)
  todo = [(w, c) for w, c in runs if not all((d / "summary.json").exists() for d in w)]
  print(f"{len(runs)} runs, {len(runs) - len(todo)} already finished, {len(todo)} to run "
        f"with {a.jobs} job(s)", flush=True)
  failed = 0
  with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
    for i, (workdir, rc, secs) in enumerate(pool.map(lambda r: run_one(*r), todo), 1):
      status = "ok" if rc == 0 else f"FAILED (exit {rc}, see {workdir / 'log.txt'})"
      print(f"[{i}/{len(todo)}] {workdir} {status} {secs:.1f}s", flush=True)
      failed += rc != 0
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
