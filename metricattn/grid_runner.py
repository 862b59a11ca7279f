"""Runs a grid of configs over seeds, one process per workdir; finished runs are skipped.

`run_grid` is what `python -m metricattn.sweep` (without a search) and
`python -m metricattn.experiment` do: check every grid point's config, plan the processes
(`metricattn.grid.plan`), skip those whose workdirs all hold a readable summary.json, run the
rest `jobs` at a time (each one's output in log.txt), and print one progress line per
running job every `progress_every` seconds (steps done, steps/s, time left).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from metricattn import runs as runs_lib
from metricattn.children import Forwarding
from metricattn.cli import say
from metricattn.errors import UserError
from metricattn.grid import check_points, grid_points, plan


def run_one(workdirs: list[Path], cmd: list[str], jobs: dict,
            children: Forwarding) -> tuple[Path, int | None, float]:
  """Runs one process (a child that dies with this one); its output goes to log.txt in its
  (first) workdir's parent or itself. The exit code is None when it was not started because
  the sweep is stopping."""
  logdir = log_dir(workdirs)
  logdir.mkdir(parents=True, exist_ok=True)
  t = time.perf_counter()
  with open(logdir / "log.txt", "a") as log:
    proc = children.spawn(cmd, stdout=log, stderr=subprocess.STDOUT)
    if proc is None:
      return logdir, None, 0.0
    jobs[logdir] = (workdirs[0], t, last_step(workdirs[0]))
    rc = children.wait(proc)
  jobs.pop(logdir, None)
  return logdir, rc, time.perf_counter() - t


def log_dir(workdirs: list[Path]) -> Path:
  """Where a process's log.txt and lock are: its workdir, or for vmapped seeds the grid
  point's directory."""
  return workdirs[0] if len(workdirs) == 1 else workdirs[0].parent


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
  started (its start-up and compilation included), time left at that speed. A job that has
  not logged a step yet (starting, compiling) gets one "starting" line, not one per tick."""
  started = set()
  while not stop.wait(every):
    for logdir, (workdir, t0, step0) in list(jobs.items()):
      step = last_step(workdir)
      if step <= step0:
        if (logdir, t0) in started:
          continue
        started.add((logdir, t0))
      say(progress_line(str(logdir.relative_to(root)), step, totals[logdir], step0,
                        time.perf_counter() - t0))


def run_grid(config: str, grid: list[str], seeds: list[int], root: Path,
             overrides: list[str] = (), jobs: int = 1, vmap_seeds: bool = False,
             progress_every: float = 10.0) -> int:
  """Runs every grid point x seed under `root` (see the module docstring); a bad grid,
  config or `jobs` is a UserError before anything runs. Returns 0 when all runs succeeded,
  1 when some failed, 128 + the signal when stopped by SIGINT or SIGTERM (its running
  runs stopped after a checkpoint, nothing left training)."""
  configs = check_points(config, grid_points(grid), overrides)
  if jobs < 1:
    raise UserError(f"--jobs must be at least 1; got {jobs}")
  runs = plan(config, grid, seeds, root, overrides, vmap_seeds)
  per_point = 1 if vmap_seeds else len(seeds)
  totals = {}
  for i, (w, _) in enumerate(runs):
    totals[w[0] if len(w) == 1 else w[0].parent] = configs[i // per_point].train.steps
  todo = [(w, c) for w, c in runs if not all(runs_lib.finished(d) for d in w)]
  live = [log_dir(w) for w, _ in todo if runs_lib.busy(log_dir(w))]
  if live:
    raise UserError(f"{len(live)} of the runs under {root} are still training in another "
                    f"process (e.g. {live[0]}, pid {runs_lib.lock_holder(live[0])}): an "
                    "earlier sweep's; wait for it to finish or stop it, then rerun")
  say(f"{len(runs)} runs, {len(runs) - len(todo)} already finished, {len(todo)} to run"
      + (f" with {jobs} job(s)" if todo else ": nothing to do"))
  failed, running, stop, t0 = 0, {}, threading.Event(), time.perf_counter()
  if progress_every > 0:
    threading.Thread(target=show_progress, args=(running, totals, root, stop, progress_every),
                     daemon=True).start()
  done = 0
  with Forwarding() as children:
    try:
      with ThreadPoolExecutor(max_workers=jobs) as pool:
        for workdir, rc, secs in pool.map(lambda r: run_one(*r, running, children), todo):
          if rc is None:
            continue  # not started: the sweep is stopping
          done += 1
          status = "ok" if rc == 0 else f"FAILED (exit {rc}, see {workdir / 'log.txt'})"
          if children.received is not None and rc in (130, 143):
            status = f"stopped with a checkpoint (exit {rc})"
          say(f"[{done}/{len(todo)}] {workdir} {status} {secs:.1f}s")
          failed += rc != 0
    finally:
      stop.set()
  if children.received is not None:
    name = signal.Signals(children.received).name
    print(f"sweep stopped by {name}: {done} of {len(todo)} runs ended (those running were "
          "stopped after a checkpoint), none left training; rerun the same command to "
          "finish", file=sys.stderr)
    return 128 + children.received
  if todo:
    say(f"sweep: {len(todo) - failed} of {len(todo)} runs ok in "
        f"{time.perf_counter() - t0:.0f} s")
  return 1 if failed else 0
