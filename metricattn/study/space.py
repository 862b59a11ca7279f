"""A study's search space and objective: `KEY=DISTRIBUTION` items, checked before any trial.

`parse_space` turns `--space` items (and `--grid` items, as choices) into `Param`s;
`check_space` builds the config at every choice and both bounds of each parameter;
`point_value` is a parameter value as it appears in a grid point (the workdir's name and the
config override); `parse_objective` reads `SPLIT/METRIC`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

from metricattn.errors import UserError
from metricattn.grid import check_points, parse_grid

DISTRIBUTIONS = "choice(a,b,...), int(low,high[,step]), uniform(low,high), loguniform(low,high)"


@dataclasses.dataclass(frozen=True)
class Param:
  """One `KEY=DISTRIBUTION(ARGS)` of a search space."""
  text: str
  key: str
  kind: str  # choice, int, uniform, loguniform
  args: tuple  # choice: the values (str); int: (low, high, step); else (low, high)

  def grid_values(self) -> list:
    """The values GridSampler walks: the choices, or the ints low..high by step."""
    if self.kind == "choice":
      return list(self.args)
    if self.kind == "int":
      return list(range(self.args[0], self.args[1] + 1, self.args[2]))
    raise UserError(f"--space {self.text!r}: --sampler grid takes choice(...) or int(...) "
                    f"only; use --sampler random or tpe for {self.kind}")

  def probes(self) -> list:
    """The values checked before any trial: every choice, else both bounds."""
    return list(self.args) if self.kind == "choice" else list(self.args[:2])

  def suggest(self, trial, grid: bool):
    if grid or self.kind == "choice":
      return trial.suggest_categorical(self.key, self.grid_values())
    if self.kind == "int":
      return trial.suggest_int(self.key, self.args[0], self.args[1], step=self.args[2])
    return trial.suggest_float(self.key, *self.args, log=self.kind == "loguniform")


def point_value(value) -> str:
  """A parameter value as it appears in a grid point: its workdir name and config override.
  Choices as given, floats by repr (exact, so that the workdir follows from the value); not
  a display format (reports format numbers with `metricattn.reporting.fmt`)."""
  return repr(value) if isinstance(value, float) else str(value)


def parse_param(text: str) -> Param:
  """'optimizer.lr=loguniform(1e-4,1e-2)' -> Param; a UserError says what is wrong."""
  m = re.fullmatch(r"\s*([\w.]+)\s*=\s*(\w+)\((.*)\)\s*", text)
  if not m:
    raise UserError(f"--space {text!r} is not of the form key=distribution(args); "
                    f"distributions: {DISTRIBUTIONS}")
  key, kind, inner = m.groups()
  args = [a.strip() for a in inner.split(",")]
  where = f"--space {text!r}"
  if kind == "choice":
    if not all(args) or any("=" in a or "/" in a for a in args):
      raise UserError(f"{where}: choice takes non-empty values without '=' or '/'")
    if len(set(args)) != len(args):
      raise UserError(f"{where}: choice repeats a value")
    return Param(text, key, kind, tuple(args))
  if kind == "int":
    try:
      nums = [int(a) for a in args]
    except ValueError:
      nums = []
    if len(nums) not in (2, 3) or (len(nums) == 3 and nums[2] < 1):
      raise UserError(f"{where}: int takes (low,high) or (low,high,step) integers, step >= 1")
    nums += [1] * (3 - len(nums))
  elif kind in ("uniform", "loguniform"):
    try:
      nums = [float(a) for a in args]
    except ValueError:
      nums = []
    if len(nums) != 2 or not all(math.isfinite(n) for n in nums):
      raise UserError(f"{where}: {kind} takes (low,high) numbers")
    if kind == "loguniform" and nums[0] <= 0:
      raise UserError(f"{where}: loguniform needs low > 0; got {args[0]}")
  else:
    raise UserError(f"{where}: unknown distribution {kind!r}; allowed: {DISTRIBUTIONS}")
  if nums[0] > nums[1]:
    raise UserError(f"{where}: low {args[0]} > high {args[1]}")
  return Param(text, key, kind, tuple(nums))


def read_space_file(path: Path) -> list[str]:
  """The `KEY=DISTRIBUTION` lines of a space file (blank lines and # comments skipped)."""
  try:
    lines = Path(path).read_text().splitlines()
  except OSError as e:
    raise UserError(f"--space-file {path}: {e.strerror}") from None
  return [l.split("#", 1)[0].strip() for l in lines if l.split("#", 1)[0].strip()]


def parse_space(items: list[str], grid: list[str] = ()) -> list[Param]:
  """The search space of `--space` items and `--grid` items (as choices); keys once each."""
  space = [parse_param(t) for t in items]
  space += [Param(f"{k}={','.join(v)}", k, "choice", tuple(v)) for k, v in parse_grid(grid)]
  keys = [p.key for p in space]
  for k in keys:
    if keys.count(k) > 1:
      raise UserError(f"--space: key {k!r} appears more than once")
  if not space:
    raise UserError("a search needs a space: --space KEY=DISTRIBUTION (or --grid, or "
                    "--space-file)")
  if "seed" in keys:
    raise UserError("--space: 'seed' is not a search parameter; use --seeds")
  return space


def check_space(config: str, space: list[Param], overrides: list[str]) -> None:
  """Builds and checks the config at every choice and both bounds of each parameter (the
  others at their first value) before any trial starts: unknown keys, values the config
  cannot take (type, attention kind, ...) are one UserError."""
  base = {p.key: point_value(p.probes()[0]) for p in space}
  for p in space:
    for value in p.probes():
      try:
        check_points(config, [{**base, p.key: point_value(value)}], overrides,
                     what="the point")
      except UserError as e:
        raise UserError(f"--space {p.text!r}: {e}") from None


def parse_objective(text: str) -> tuple[str, str]:
  """'val/accuracy' -> ('val', 'accuracy')."""
  split, sep, key = text.partition("/")
  if not (sep and re.fullmatch(r"\w+", split) and re.fullmatch(r"\w+", key)):
    raise UserError(f"--objective {text!r} is not SPLIT/METRIC, e.g. val/accuracy, "
                    "test/accuracy or val/bleu (the keys of a run's summary.json)")
  return split, key
