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
(random, TPE or grid search, workers sharing one storage, pruning): `metricattn/study/`.

With `--vmap-seeds` all seeds of a grid point train in one process and one compiled
program (the step vmapped over seeds; for small models such as the IPN), with the same
workdir layout; the point's checkpoints are in ROOT/<key>=<value>/checkpoints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metricattn.cli import fail
from metricattn.errors import UserError
from metricattn.grid import parse_seeds
from metricattn.grid_runner import run_grid
from metricattn.study.launch import run_study


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m metricattn.sweep", description=__doc__.split("\n")[0])
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
  o = p.add_argument_group("Optuna studies (metricattn/study/)")
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
  try:
    if (a.space or a.space_file or a.sampler or a.storage or a.study or a.trials is not None
        or a.workers != 1 or a.pruner != "none"):
      a.sampler = a.sampler or ("grid" if a.grid and not (a.space or a.space_file) else "tpe")
      return run_study(a, sys.argv[1:] if argv is None else list(argv))
    return run_grid(a.config, a.grid, parse_seeds(a.seeds), a.root, a.set, a.jobs,
                    a.vmap_seeds, a.progress_every)
  except UserError as e:
    fail(str(e))


if __name__ == "__main__":
  sys.exit(main())
