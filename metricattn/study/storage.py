"""A study's storage, sampler and pruner, and its definition ROOT/study.json.

The definition is what every worker of a study must share (config, space, seeds, objective,
sampler, pruner, storage without its password); a root holds one study.
"""

from __future__ import annotations

import json
from pathlib import Path

from metricattn import runs as runs_lib
from metricattn.errors import UserError
from metricattn.fileio import read_json, write_atomic
from metricattn.study.space import Param

STUDY_FILE = "study.json"  # in the root: the study's definition, for workers and reports
SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "hyperband")


def open_storage(url: str):
  """An SQLAlchemy URL (with '://') as an RDB storage; anything else is the path of an
  Optuna journal file (one host, or a shared disk)."""
  import optuna
  from optuna.storages.journal import JournalFileBackend, JournalStorage
  try:
    if "://" in url:
      return optuna.storages.RDBStorage(url)
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(url))
  except Exception as e:  # a bad URL or a missing driver (psycopg2, pymysql): one line
    text = " ".join(str(e).split())
    raise UserError(f"--storage {url}: cannot open it: {type(e).__name__}: {text}") from None


def shown_storage(url: str) -> str:
  """The storage URL without its password (what study.json and the report record)."""
  if "://" not in url:
    return url
  from sqlalchemy.engine import make_url
  return make_url(url).render_as_string(hide_password=True)


def make_sampler(name: str, space: list[Param]):
  import optuna
  if name == "grid":

    class Grid(optuna.samplers.GridSampler):
      """GridSampler whose `after_trial` does not call `study.stop()`: the workers' loop
      decides when the study is done (and `study.tell` outside `optimize` may not stop)."""

      def after_trial(self, study, trial, state, values):
        pass

    return Grid({p.key: p.grid_values() for p in space})
  if name == "random":
    return optuna.samplers.RandomSampler()
  return optuna.samplers.TPESampler()


def make_pruner(name: str, steps: int, eval_every: int):
  """Median or Hyperband over training steps (reported at each evaluation), or none."""
  import optuna
  if name == "median":
    return optuna.pruners.MedianPruner(n_startup_trials=2)
  if name == "hyperband":
    return optuna.pruners.HyperbandPruner(min_resource=eval_every, max_resource=steps)
  return optuna.pruners.NopPruner()


def load_definition(root: Path) -> dict | None:
  return read_json(Path(root) / STUDY_FILE)


def check_definition(root: Path, definition: dict) -> None:
  """Refuses a root whose study.json holds another study (all but `trials` must match)."""
  old = load_definition(root)
  if old is not None:
    diff = [k for k in sorted(set(old) | set(definition))
            if k != "trials" and old.get(k) != definition.get(k)]
    if diff:
      listed = "; ".join(f"{k}: {old.get(k)!r} -> {definition.get(k)!r}" for k in diff)
      raise UserError(f"{root} holds another study ({listed}); run the same command to "
                      "join it, or use another --root")


def record_definition(root: Path, definition: dict) -> None:
  """Writes ROOT/study.json after `check_definition`."""
  check_definition(root, definition)
  runs_lib.make_workdir(Path(root))
  write_atomic(Path(root) / STUDY_FILE, json.dumps(definition, indent=2) + "\n")


def open_study(definition: dict, sampler=None, pruner=None, create: bool = True):
  import optuna
  optuna.logging.set_verbosity(optuna.logging.ERROR)
  storage = open_storage(definition["storage_url"])
  direction = "maximize" if definition["direction"] == "max" else "minimize"
  if create:
    return optuna.create_study(storage=storage, study_name=definition["study"],
                               direction=direction, sampler=sampler, pruner=pruner,
                               load_if_exists=True)
  return optuna.load_study(storage=storage, study_name=definition["study"])
