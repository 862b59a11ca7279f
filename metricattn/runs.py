"""The run layout: what a workdir holds, how a root of runs is laid out, and the run lock.

A run's workdir holds config.json (the config it trains with), metrics.jsonl (one record per
logged step and evaluation), summary.json (written once, when the run has finished),
checkpoints/ (orbax; for vmapped seeds the group directory holds them and each seed has
its own workdir `seed=N/`), log.txt when a sweep started it, .lock (the pid training in it),
config_changes.jsonl (settings changed on resume) and corrupt_checkpoints/ (unreadable
checkpoints moved aside, never deleted). This module is the only one that spells the layout
(`seed=N`, `KEY=VALUE` point directories, experiment.json) and imports no trainer: restoring
a model from a run is `metricattn.restore`, writing files is `metricattn.fileio`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from metricattn.errors import UserError
from metricattn.fileio import read_json


def finished(workdir: str | Path) -> bool:
  """True when the run in `workdir` has a readable summary.json."""
  return read_json(Path(workdir) / "summary.json") is not None


SELECTION_SPLIT = "val"  # the only split a checkpoint or evaluation is chosen on


def best_val_step(records: list[dict], steps: list[int] | None = None) -> int | None:
  """The step of the best evaluation on the val split (accuracy, else BLEU, else lowest
  loss; the latest of ties), among `steps` when given; None when there is none."""
  rows = [r for r in records
          if r["split"] == SELECTION_SPLIT and (steps is None or r["step"] in steps)]
  for key, sign in (("accuracy", 1), ("bleu", 1), ("loss", -1)):
    scored = [(sign * r[key], r["step"]) for r in rows if key in r]
    if scored:
      return max(scored)[1]
  return None


# ---------------------------------------------------------------- a root of runs

# A sweep's root holds one directory per grid point, nested as KEY=VALUE/..., and in it one
# workdir per seed, SEED_PREFIX + the seed (`seed=3`); vmapped seeds share the point
# directory's checkpoints/. An experiment's root also holds experiment.json, its definition.
SEED_PREFIX = "seed="


def point_dir(root: str | Path, point: dict[str, str]) -> Path:
  """ROOT/KEY=VALUE/... of one grid point ({} gives the root)."""
  return Path(root).joinpath(*[f"{k}={v}" for k, v in point.items()])


def seed_dir(point: str | Path, seed: int) -> Path:
  """The workdir of `seed` in a grid point's directory."""
  return Path(point) / f"{SEED_PREFIX}{seed}"


def seed_of(workdir: str | Path) -> int | None:
  """The seed of a `seed=N` workdir; None for any other directory."""
  name = Path(workdir).name
  if not name.startswith(SEED_PREFIX):
    return None
  try:
    return int(name[len(SEED_PREFIX):])
  except ValueError:
    return None


def group_name(root: str | Path, workdir: str | Path) -> str:
  """A run's group: its grid point's path below root ('attention=l2'), or the root's name
  when the runs have no grid point (one run, or seeds only)."""
  parts = Path(workdir).relative_to(root).parts
  return "/".join(p for p in parts if seed_of(p) is None) or Path(root).resolve().name


def finished_runs(root: str | Path) -> list[Path]:
  """The workdirs below `root` (itself included) that hold a summary.json, sorted."""
  return [p.parent for p in sorted(Path(root).rglob("summary.json"))]


def load_experiment(root: str | Path) -> dict | None:
  """ROOT/experiment.json (what `metricattn.experiment` ran there), or None."""
  return read_json(Path(root) / "experiment.json")


def experiment_title(root: str | Path, experiment: dict | None = None) -> str:
  """The title of ROOT's experiment (ROOT/experiment.json), else the name of ROOT."""
  experiment = experiment or load_experiment(root)
  return experiment["title"] if experiment else Path(root).resolve().name


# ---------------------------------------------------------------- one run

def run_config(workdir: str | Path):
  """The ConfigDict a run trained with (its config.json)."""
  import ml_collections
  config = read_json(Path(workdir) / "config.json")
  if config is None:
    raise UserError(f"{workdir} is not a run workdir: it has no readable config.json")
  return ml_collections.ConfigDict(config)


def vmapped_seeds(home: Path) -> list[int]:
  """The seeds trained vmapped in one program under `home` (its seed=N runs), in the order of
  the stacked checkpoint's seed axis."""
  return sorted(seed_of(p) for p in home.glob(f"{SEED_PREFIX}*")
                if (p / "config.json").exists())


def checkpoint_home(workdir: str | Path) -> tuple[Path, bool]:
  """(the directory whose checkpoints/ holds this run's state, whether it is vmapped).

  A run trained alone keeps WORKDIR/checkpoints; a seed trained vmapped (`--seeds`, workdir
  ROOT/seed=N) shares ROOT/checkpoints with its sibling seeds.
  """
  workdir = Path(workdir)
  if (workdir / "checkpoints").is_dir():
    return workdir, False
  if seed_of(workdir) is not None and (workdir.parent / "checkpoints").is_dir():
    return workdir.parent, True
  raise UserError(f"{workdir} has no checkpoint (neither {workdir / 'checkpoints'} nor "
                  "../checkpoints of vmapped seeds)")


# ---------------------------------------------------------------- one process per workdir

class Lock:
  """Holds WORKDIR/.lock for the whole run (an advisory flock; the kernel drops it when the
  process dies, so a stale lock of a dead process is taken over). A second process on the
  same workdir gets a UserError naming the holder's pid."""

  def __init__(self, workdir: Path):
    import fcntl
    path = Path(workdir) / ".lock"
    self.file = open(path, "a+")
    try:
      fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      self.file.seek(0)
      holder = self.file.read().strip() or "unknown"
      self.file.close()
      raise UserError(f"{workdir} is in use by another run (pid {holder}); wait for it to "
                      "finish or stop it, or use another --workdir") from None
    self.file.seek(0)
    self.file.truncate()
    self.file.write(f"{os.getpid()}\n")
    self.file.flush()

  def release(self) -> None:
    self.file.close()


def lock_holder(workdir: str | Path) -> str:
  """The pid written in WORKDIR/.lock ('unknown' when there is none)."""
  try:
    return (Path(workdir) / ".lock").read_text().strip() or "unknown"
  except OSError:
    return "unknown"


def busy(workdir: str | Path) -> bool:
  """Whether a live process holds WORKDIR/.lock now (a run trains there)."""
  import fcntl
  try:
    f = open(Path(workdir) / ".lock")
  except OSError:
    return False
  with f:
    try:
      fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
      return True
    return False


def make_workdir(workdir: Path, flag: str = "--workdir") -> None:
  """Creates `workdir` (and its parents), or says in one line, naming the command line's
  `flag`, why it cannot be used."""
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-test-")
    probe.close()
  except FileExistsError:
    raise UserError(f"{flag} {workdir} exists and is not a directory") from None
  except NotADirectoryError:
    raise UserError(f"{flag} {workdir}: a parent of it is a file, not a directory") from None
  except PermissionError:
    raise UserError(f"{flag} {workdir} is not writable (permission denied); choose a "
                    "directory you can write to") from None
  except OSError as e:
    raise UserError(f"{flag} {workdir} cannot be used: {e.strerror}") from None


# ---------------------------------------------------------------- config changes on resume

# Settings that cannot change what a run computes up to now: extending or shortening it,
# logging, evaluation and checkpoint cadence, wandb, the Optuna trial that runs it (a trial
# retried after its worker died has a new number), how attention is computed (the same
# function: `model.implementation`, absent in runs older than it), translation's length buckets
# (only padding changes, the same loss: `data.buckets`, absent in runs older than it, is 0).
# Changing them on resume is allowed and recorded; any other change needs --allow_config_change.
HARMLESS = ("train.steps", "train.log_every", "train.eval_every", "train.checkpoint_every",
            "train.keep_checkpoints", "wandb.", "sweep.", "model.implementation",
            "data.buckets")
CHANGES = "config_changes.jsonl"


def config_changes(old: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
  """(dotted key, old, new) for every leaf that differs between two config dicts."""
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
    if isinstance(a, dict) and isinstance(b, dict):
      out += config_changes(a, b, f"{prefix}{key}.")
    elif a != b:
      out.append((prefix + key, a, b))
  return out


def check_resume(workdir: Path, config, allow: bool) -> list[tuple[str, object, object]]:
  """Before a run resumes: refuses changed settings (UserError listing them, old -> new)
  unless they are harmless or `allow`; returns the accepted changes for `record_changes`."""
  old = read_json(workdir / "config.json")
  changes = [] if old is None else config_changes(old, json.loads(config.to_json()))
  risky = [c for c in changes if not c[0].startswith(HARMLESS)]
  if risky and not allow:
    listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in risky)
    raise UserError(f"{workdir} holds a run with other settings ({listed}); resume with the "
                    "settings it was started with, use another --workdir, or pass "
                    "--allow_config_change to continue it with the new ones (recorded in "
                    f"{CHANGES})")
  return changes


def record_changes(workdir: Path, changes: list[tuple[str, object, object]], step: int) -> None:
  """Appends the accepted changes of a run resumed at `step` to WORKDIR/CHANGES."""
  if not changes:
    return
  with open(workdir / CHANGES, "a") as f:
    for k, a, b in changes:
      f.write(json.dumps({"step": step, "key": k, "old": a, "new": b,
                          "forced": not k.startswith(HARMLESS)}) + "\n")
