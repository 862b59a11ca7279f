"""The run directory: what a workdir holds, and reading and writing it safely.

A run's workdir holds config.json (the config it trains with), metrics.jsonl (one record per
logged step and evaluation), summary.json (written once, when the run has finished),
checkpoints/ (orbax; for vmapped seeds the group directory holds them and each seed has
its own workdir `seed=N/`) and log.txt when a sweep started it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_atomic(path: str | Path, text: str) -> None:
  """Writes `text` to `path` through a temporary file and a rename: never half a file."""
  path = Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
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


def load_config(workdir: str | Path):
  """The ConfigDict a run trained with (its config.json)."""
  import ml_collections
  from metricattn.errors import UserError
  config = read_json(Path(workdir) / "config.json")
  if config is None:
    raise UserError(f"{workdir} is not a run workdir: it has no readable config.json")
  return ml_collections.ConfigDict(config)


def seed_index(workdir: Path, seed: int, n: int) -> int:
  """Position of `seed` in a program of `n` vmapped seeds: its rank among the seed=N siblings."""
  from metricattn.errors import UserError
  seeds = sorted(int(p.name.split("=", 1)[1]) for p in workdir.parent.glob("seed=*")
                 if (p / "config.json").exists())
  if len(seeds) != n or seed not in seeds:
    raise UserError(f"{workdir.parent / 'checkpoints'} holds {n} vmapped seeds but "
                    f"{workdir.parent} has seed directories {seeds}: cannot tell which slice "
                    f"is seed {seed}")
  return seeds.index(seed)


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
    n = 0
    if stacked:
      n = len([p for p in home.glob("seed=*") if (p / "config.json").exists()])
      params = jax.tree.map(lambda x: np.broadcast_to(x, (n, *x.shape)).copy(), params)
    if sharding is not None:
      params = jax.device_put(params, sharding)
    params = ckpt.restore_params(step, params, make_optimizer(config), stacked=stacked)
  finally:
    ckpt.close()
  if stacked:
    i = seed_index(workdir, int(config.seed), n)
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
