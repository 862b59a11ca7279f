"""`metricattn.sweep` with a search (`--space`, `--sampler`, `--storage`, ...): `run_study`
checks every setting and the search space, records the study's definition, then works as
one worker or starts `--workers` local ones (each running the same sweep command).
"""

from __future__ import annotations

import math
import os
import signal
import sys
from pathlib import Path

from metricattn.children import Forwarding
from metricattn.errors import UserError
from metricattn.grid import check_points, parse_seeds, point_config
from metricattn.study.space import check_space, parse_objective, parse_space, read_space_file
from metricattn.study.storage import (PRUNERS, SAMPLERS, check_definition, make_pruner,
                                      make_sampler, open_study, record_definition,
                                      shown_storage)
from metricattn.study.worker import Worker, summary_line


def definition_of(a, root: Path) -> dict:
  """What every worker of the study must share (ROOT/study.json)."""
  return {"study": a.study or root.resolve().name,
          "storage": shown_storage(a.storage or str(root / "optuna.journal")),
          "storage_url": a.storage or str(root / "optuna.journal"),
          "config": a.config, "set": list(a.set), "space": [p.text for p in a.parsed_space],
          "sampler": a.sampler, "seeds": a.parsed_seeds, "vmap_seeds": a.vmap_seeds,
          "objective": a.objective, "direction": a.direction, "pruner": a.pruner,
          "trials": a.trials}


def check_search(a) -> None:
  """Checks the search flags `a` of the sweep (UserError on the first bad one) and adds
  `a.parsed_seeds`, `a.parsed_space` and, for a grid without `--trials`, `a.trials`."""
  a.parsed_seeds = parse_seeds(a.seeds)
  items = [*a.space, *(read_space_file(a.space_file) if a.space_file else [])]
  a.parsed_space = parse_space(items, a.grid)
  if a.sampler not in SAMPLERS:
    raise UserError(f"--sampler {a.sampler!r}; allowed: {', '.join(SAMPLERS)}")
  if a.pruner not in PRUNERS:
    raise UserError(f"--pruner {a.pruner!r}; allowed: {', '.join(PRUNERS)}")
  if a.direction not in ("max", "min"):
    raise UserError(f"--direction {a.direction!r}; allowed: max, min")
  parse_objective(a.objective)
  grid_size = math.prod(len(p.grid_values()) for p in a.parsed_space) \
      if a.sampler == "grid" else None
  if a.trials is None:
    if grid_size is None:
      raise UserError(f"--sampler {a.sampler} needs --trials N (the study's total)")
    a.trials = grid_size
  if a.jobs != 1:
    raise UserError("--jobs is for grid sweeps; a search runs in --workers K workers")
  if a.trials < 1 or a.workers < 1 or a.heartbeat <= 0:
    raise UserError("--trials and --workers must be at least 1, --heartbeat positive")
  if a.worker_name is None:  # else a worker started by `--workers`, which checked
    check_space(a.config, a.parsed_space, a.set)
    check_points(a.config, [{}], a.set)


def run_study(a, argv: list[str]) -> int:
  """`metricattn.sweep` with a search, `a` its parsed flags and `argv` its arguments:
  checks everything, records the study, then works (or starts `--workers` local workers,
  each running the same sweep command). Bad input is a UserError before anything starts
  (and a bad objective one while working); returns the worker's exit code."""
  check_search(a)
  base = point_config(a.config, {}, a.set)
  definition = definition_of(a, a.root)
  recorded = {k: v for k, v in definition.items() if k != "storage_url"}
  check_definition(a.root, recorded)
  sampler = make_sampler(a.sampler, a.parsed_space)
  pruner = make_pruner(a.pruner, int(base.train.steps), int(base.train.eval_every))
  study = open_study(definition, sampler, pruner)
  record_definition(a.root, recorded)
  if a.workers > 1:
    # The workers die with this launcher and get its SIGTERM/SIGINT once; their trials
    # stop after a checkpoint and are queued again for the next worker.
    with Forwarding() as children:
      procs = [children.spawn([sys.executable, "-m", "metricattn.sweep", *argv, "--workers",
                               "1", "--worker-name", f"worker {i} of {os.getpid()}"])
               for i in range(a.workers)]
      codes = [children.wait(p) for p in procs if p is not None]
    if children.received is not None:
      print(f"study stopped by {signal.Signals(children.received).name}: its workers' "
            "running trials stopped after a checkpoint and are queued again; rerun the same "
            "command to go on", file=sys.stderr)
      return 128 + children.received
    return max([c if c > 0 else 128 - c for c in codes if c], default=0)  # -N: signal N
  worker = Worker(definition, a.root, a.parsed_space, a.trials, a.heartbeat,
                  name=a.worker_name)
  worker.say(f"study {definition['study']} ({definition['storage']}): {a.sampler} sampler, "
             f"{a.trials} trials, objective {a.objective} ({a.direction})")
  signal.signal(signal.SIGTERM, worker.on_sigterm)
  code = worker.run(study)
  worker.say(summary_line(study, a.objective))
  return code
