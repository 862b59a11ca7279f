"""Grids of runs: seed lists, `--grid` items, grid points, their configs and processes.

What the commands share about a grid (`metricattn.main`'s `--seeds`, the sweep, the study's
search space, the experiment runner): `parse_seeds` ('0:5', '3', '0,2,7'), `parse_grid`
(`key=v1,v2` items), `grid_points` (their product), `split_point` (config arguments and
dotted overrides of a point), `point_config` (the config a point trains with, built as
`metricattn.main` builds it), `check_points` (every point's config built and checked before
anything runs) and `plan` (the `python -m metricattn.main` process of each point and seed, in
the run layout of `metricattn.runs`). `metricattn.grid_runner` runs a plan.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from metricattn import runs as runs_lib
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
  """Every combination of the `--grid` items' values, in order: [{key: value}, ...]."""
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
