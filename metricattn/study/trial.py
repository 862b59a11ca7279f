"""One trial's process: `python -m metricattn.study.trial SPEC` (started by a worker) trains
the trial's seeds in their workdirs; SPEC is JSON (config, overrides, point, seeds, home
directory, vmapped or not, and the `sweep` record: study, trial number, parameters)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

from metricattn import runs as runs_lib
from metricattn.errors import Interrupted
from metricattn.grid import point_config


def train_trial(spec: dict) -> None:
  """Trains one trial's seeds (vmapped in one program, or one after the other) in its
  workdirs; its config is the sweep's, plus `sweep` and, for wandb, the study as group."""
  from metricattn.train import train_and_evaluate, train_seeds
  config = point_config(spec["config"], spec["point"], spec["set"])
  config.sweep = spec["sweep"]
  if "wandb" in config:
    config.wandb.group = spec["sweep"]["study"]
  home = Path(spec["home"])
  if spec["vmap_seeds"]:
    train_seeds(config, spec["seeds"], home)
    return
  for seed in spec["seeds"]:
    c = copy.deepcopy(config)
    c.seed = seed
    if "wandb" in c:
      c.wandb.name = "/".join([*spec["sweep"]["params"], runs_lib.seed_dir("", seed).name])
    train_and_evaluate(c, runs_lib.seed_dir(home, seed))


def main(argv: list[str]) -> None:
  """The trial process: `argv[1]` is the SPEC; bad input ends it with one `error:` line,
  an interrupt (SIGTERM) after its checkpoint with the interrupt's exit code."""
  from metricattn.cli import enable_compilation_cache, run
  enable_compilation_cache()
  try:
    run(train_trial, json.loads(argv[1]))
  except Interrupted as e:
    print(e, file=sys.stderr)
    sys.exit(e.code)


if __name__ == "__main__":
  main(sys.argv)
