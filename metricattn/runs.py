"""The run directory: what a workdir holds, and reading and writing it safely.

A run's workdir holds config.json (the config it trains with), metrics.jsonl (one record per
logged step and evaluation), summary.json (written once, when the run has finished),
checkpoints/ (orbax; for vmapped seeds the group directory holds them and each seed has
its own workdir `seed=N/`), log.txt when a sweep started it, .lock (the pid training in it),
config_changes.jsonl (settings changed on resume) and corrupt_checkpoints/ (unreadable
checkpoints moved aside, never deleted).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_atomic(path: str | Path, text: str | bytes) -> None:
  """Writes `text` (or bytes) to `path` through a temporary file and a rename: never half a
  file, also when several processes write the same file at once."""
  path = Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
      f.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as open() would have made it (mkstemp makes 0600)
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def read_json(path: str | Path) -> dict | None:
  """A JSON object file, or None when it is missing or unreadable (e.g. truncated)."""
  try:
    value = json.loads(Path(path).read_text())
  except (OSError, ValueError):
    return None
  return value if isinstance(value, dict) else None


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


def load_config(workdir: str | Path):
  """The ConfigDict a run trained with (its config.json)."""
  import ml_collections
  from metricattn.errors import UserError
  config = read_json(Path(workdir) / "config.json")
  if config is None:
    raise UserError(f"{workdir} is not a run workdir: it has no readable config.json")
  return ml_collections.ConfigDict(config)


def vmapped_seeds(home: Path) -> list[int]:
  """The seeds trained vmapped in one program under `home` (its seed=N runs), in the order of
  the stacked checkpoint's seed axis."""
  return sorted(int(p.name.split("=", 1)[1]) for p in home.glob("seed=*")
                if (p / "config.json").exists())


def checkpoint_home(workdir: str | Path) -> tuple[Path, bool]:
  """(the directory whose checkpoints/ holds this run's state, whether it is vmapped).

  A run trained alone keeps WORKDIR/checkpoints; a seed trained vmapped (`--seeds`, workdir
  ROOT/seed=N) shares ROOT/checkpoints with its sibling seeds.
  """
  from metricattn.errors import UserError
  workdir = Path(workdir)
  if (workdir / "checkpoints").is_dir():
    return workdir, False
  if workdir.name.startswith("seed=") and (workdir.parent / "checkpoints").is_dir():
    return workdir.parent, True
  raise UserError(f"{workdir} has no checkpoint (neither {workdir / 'checkpoints'} nor "
                  "../checkpoints of vmapped seeds)")


def restore(workdir: str | Path, step: int | None = None, sharding=None):
  """(config, data, task, graphdef, params, step) of a run's checkpoint at `step` (default:
  the latest), for a run trained alone or as one of vmapped seeds; `sharding` places the
  parameters (default: the host's first device)."""
  import jax
  import numpy as np
  from metricattn.checkpoint import Checkpointer
  from metricattn.errors import UserError
  from metricattn.optim import make_optimizer
  from metricattn.train import build
  workdir = Path(workdir)
  config = load_config(workdir)
  home, stacked = checkpoint_home(workdir)
  data, task, graphdef, params = build(config)
  ckpt = Checkpointer(home, config.train.keep_checkpoints)
  try:
    steps = sorted(ckpt.manager.all_steps())
    if not steps:
      raise UserError(f"{ckpt.directory} holds no checkpoint")
    step = steps[-1] if step is None else step
    if step not in steps:
      raise UserError(f"no checkpoint at step {step} in {ckpt.directory}; kept: {steps}")
    if stacked:
      seeds = vmapped_seeds(home)
      params = jax.tree.map(lambda x: np.broadcast_to(x, (len(seeds), *x.shape)).copy(),
                            params)
    if sharding is not None:
      params = jax.device_put(params, sharding)
    params = ckpt.restore_params(step, params, make_optimizer(config), stacked=stacked)
  finally:
    ckpt.close()
  if stacked:
    i = seeds.index(int(config.seed))
    params = jax.tree.map(lambda x: x[i], params)
  return config, data, task, graphdef, params, step


def checkpoint_steps(workdir: str | Path) -> list[int]:
  """The kept checkpoint steps of a run (vmapped or not)."""
  from metricattn.checkpoint import Checkpointer
  home, _ = checkpoint_home(workdir)
  ckpt = Checkpointer(home, None)  # keeps all: reading must never delete
  try:
    return sorted(ckpt.manager.all_steps())
  finally:
    ckpt.close()


# ---------------------------------------------------------------- one process per workdir

class Lock:
  """Holds WORKDIR/.lock for the whole run (an advisory flock; the kernel drops it when the
  process dies, so a stale lock of a dead process is taken over). A second process on the
  same workdir gets a UserError naming the holder's pid."""

  def __init__(self, workdir: Path):
    import fcntl
    from metricattn.errors import UserError
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


def make_workdir(workdir: Path) -> None:
  """Creates `workdir` (and its parents), or says in one line why it cannot be used."""
  from metricattn.errors import UserError
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-test-")
    probe.close()
  except FileExistsError:
    raise UserError(f"--workdir {workdir} exists and is not a directory") from None
  except NotADirectoryError:
    raise UserError(f"--workdir {workdir}: a parent of it is a file, not a directory") from None
  except PermissionError:
    raise UserError(f"--workdir {workdir} is not writable (permission denied); choose a "
                    "directory you can write to") from None


# ---------------------------------------------------------------- config changes on resume

# Settings that cannot change what a run computes up to now: extending or shortening it,
# logging, evaluation and checkpoint cadence, wandb, the Optuna trial that runs it (a trial
# retried after its worker died has a new number), how attention is computed (the same
# function: `model.implementation`, absent in runs older than it). Changing them on resume is allowed and
# recorded; any other change needs --allow_config_change.
HARMLESS = ("train.steps", "train.log_every", "train.eval_every", "train.checkpoint_every",
            "train.keep_checkpoints", "wandb.", "sweep.", "model.implementation")
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
  from metricattn.errors import UserError
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
