"""Optuna studies: searches over config values by workers that share one storage.

  python -m metricattn.sweep --config=configs/moons_ipn.py --root runs/moons-tpe \
      --space 'optimizer.lr=loguniform(1e-4,1e-2)' --space 'model.depth=int(1,4)' \
      --space 'model.attention=choice(softmax,l2,metric)' --sampler tpe --trials 20 \
      --seeds 0:3 --objective test/accuracy --direction max \
      [--storage sqlite:///runs/moons-tpe.db] [--study NAME] [--workers 2] [--pruner median]

`metricattn.sweep` hands every search (`--space`, `--sampler`, `--storage`, ...) to `main`
here. A search space is one `KEY=DISTRIBUTION` per `--space` (or per line of
`--space-file`): `choice(a,b,...)`, `int(low,high[,step])`, `uniform(low,high)`,
`loguniform(low,high)`; KEY is a config argument (`attention`) or a dotted config value
(`optimizer.lr`), as in `--grid`, and every key and bound is checked by building the config
before any trial starts. `--sampler grid` (Optuna's GridSampler) takes `choice` and `int`.

A worker is a loop: retry the trials whose worker died, stop when the study has `--trials`
trials (finished, running or failed; a retried trial counts once) and none runs elsewhere,
else ask Optuna for a trial and train it. Any number of
workers, on any machines, join one study by running the same command (`--storage`: a
journal file path, the default ROOT/optuna.journal, or an SQLAlchemy URL: sqlite:///,
postgresql://, mysql+pymysql://); `--workers K` starts K local ones.

A trial trains in its own process (`python -m metricattn.study SPEC`, started by the worker)
in ROOT/<key>=<value>/.../seed=<s>, the layout of `--grid`: an ordinary run directory per
seed whose config.json also holds `sweep` (study, trial number, parameters); its value is
the mean over its seeds of the objective in their summary.json. The directory follows from
the parameters alone, so a trial run again (its worker was killed: no heartbeat for
`--heartbeat`*3 seconds) resumes from its checkpoint, and a trial whose runs have all
finished reuses them. While a trial trains, its worker reads the objective's evaluations from
metrics.jsonl, reports them to Optuna and, with `--pruner median|hyperband`, stops a pruned
trial (SIGTERM: its process writes a checkpoint and exits).

`python -m metricattn.report ROOT` adds `report_section`: the best trials, Optuna's
optimisation history and parameter importances as PNGs.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from metricattn import runs as runs_lib
from metricattn.fileio import read_json, read_jsonl, write_atomic
from metricattn.errors import Interrupted, UserError

STUDY_FILE = "study.json"  # in the root: the study's definition, for workers and reports
SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "hyperband")
DISTRIBUTIONS = "choice(a,b,...), int(low,high[,step]), uniform(low,high), loguniform(low,high)"
STALE_BEATS = 3  # a running trial without a heartbeat for this many intervals is retried


# ---------------------------------------------------------------- the search space

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


def format_value(value) -> str:
  """A parameter value as its workdir name and config override: choices as given, floats
  by repr (exact, so that the workdir follows from the value)."""
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
  from metricattn.sweep import parse_grid
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
  from metricattn.sweep import check_points
  base = {p.key: format_value(p.probes()[0]) for p in space}
  for p in space:
    for value in p.probes():
      try:
        check_points(config, [{**base, p.key: format_value(value)}], overrides,
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


# ---------------------------------------------------------------- storage and study

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


# ---------------------------------------------------------------- the worker

class TrialFailed(Exception):
  """A trial that ends FAIL (its run failed, or it is over the study's budget)."""


def counted(trials) -> list:
  """The trials of the budget: all but the failed ones that were queued again (their copy
  counts instead) and the surplus ones (see `surplus`)."""
  from optuna.trial import TrialState
  retried = {t.user_attrs.get("retry_of") for t in trials}
  return [t for t in trials if not (t.state == TrialState.FAIL and (
      t.number in retried or t.user_attrs.get("surplus")))]


def retry_stale(study, grace: float, say) -> None:
  """Fails each RUNNING trial whose heartbeat is older than `grace` s (its worker died) and
  queues its parameters again; the worker that fails it first queues it (once)."""
  import optuna
  from optuna.trial import TrialState
  now = time.time()
  for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
    last = t.user_attrs.get("heartbeat") or t.datetime_start.timestamp()
    if now - last <= grace:
      continue
    try:
      study.tell(t.number, state=TrialState.FAIL)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
      continue  # another worker failed it first
    study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    say(f"trial {t.number}: no heartbeat for {now - last:.0f} s (its worker stopped); "
        "queued again, to resume from its checkpoint")


def budget_left(study, n_trials: int) -> tuple[bool, int]:
  """(whether a trial is to be asked for, how many trials other workers are running)."""
  from optuna.trial import TrialState
  trials = study.get_trials(deepcopy=False)
  waiting = any(t.state == TrialState.WAITING for t in trials)
  return (waiting or len(counted(trials)) < n_trials,
          sum(t.state == TrialState.RUNNING for t in trials))


def surplus(study, trial, n_trials: int) -> bool:
  """Whether a new (not retried) trial is over the budget: two workers asked at once."""
  if "retry_of" in trial.user_attrs:
    return False
  return len([t for t in counted(study.get_trials(deepcopy=False))
              if t.number < trial.number]) >= n_trials


def objective_values(workdirs: list[Path], objective: str) -> list[float]:
  """The objective in each workdir's summary.json (UserError naming the logged ones)."""
  values = []
  for w in workdirs:
    summary = read_json(w / "summary.json") or {}
    if objective not in summary:
      logged = ", ".join(k for k in summary if "/" in k and not k.startswith("train/"))
      raise UserError(f"--objective {objective} is not in {w / 'summary.json'} (it has: "
                      f"{logged}); choose one of those")
    values.append(float(summary[objective]))
  return values


def intermediate(workdirs: list[Path], objective: str) -> dict[int, float]:
  """{step: mean objective} over the steps that every started run (with a metrics.jsonl)
  has evaluated; UserError when a run's evaluations lack the objective."""
  split, key = objective.split("/")
  per_run = []
  for w in workdirs:
    if not (w / "metrics.jsonl").exists():
      continue
    records = [r for r in read_jsonl(w / "metrics.jsonl") if r["split"] != "train"]
    found = {r["step"]: r[key] for r in records if r["split"] == split and key in r}
    if records and not found:
      logged = sorted({f"{r['split']}/{k}" for r in records for k in r
                       if k not in ("step", "split")})
      raise UserError(f"--objective {objective} is not among the evaluations of {w} "
                      f"({', '.join(logged)}); choose one of those, with a new --root (this "
                      "one keeps its study)")
    per_run.append(found)
  if not per_run:
    return {}
  steps = set.intersection(*[set(f) for f in per_run])
  return {s: sum(f[s] for f in per_run) / len(per_run) for s in sorted(steps)}


def _die_with_parent() -> None:
  """In the trial's process (Linux): SIGTERM when the worker dies, so that a killed worker's
  run writes a checkpoint and frees its workdir instead of training on unseen."""
  import ctypes
  try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


class Worker:
  """One worker's loop over the trials of a study (see the module docstring)."""

  def __init__(self, definition: dict, root: Path, space: list[Param], n_trials: int,
               heartbeat: float, poll: float = 1.0, name: str | None = None):
    self.d, self.root, self.space, self.n_trials = definition, root, space, n_trials
    self.heartbeat, self.poll = heartbeat, poll
    self.name = name or f"{socket.gethostname()}:{os.getpid()}"
    self.grid = definition["sampler"] == "grid"

  stopping = None  # the signal number of a SIGTERM received (a scheduler's preemption)

  def on_sigterm(self, signum, frame) -> None:
    """SIGTERM: the running trial stops (its process checkpoints) and is queued again."""
    self.stopping = signum

  def check_stop(self) -> None:
    if self.stopping is not None:
      raise Interrupted("SIGTERM", 128 + self.stopping)

  def say(self, line: str) -> None:
    print(f"[{self.name}] {line}", flush=True)

  def run(self, study) -> int:
    """Trains trials until the study is done; 130 when interrupted (the trial is queued
    again), 2 on a bad objective, else 0."""
    from optuna.trial import TrialState
    said = False
    while self.stopping is None:
      retry_stale(study, STALE_BEATS * self.heartbeat, self.say)
      more, running = budget_left(study, self.n_trials)
      if not more and not running:
        break
      if not more:  # stay, to retry the trials of a worker that stops
        if not said:
          self.say(f"no trial left to start; waiting for the {running} running in other "
                   "workers (a trial whose worker stops is retried here)")
          said = True
        time.sleep(self.poll)
        continue
      trial = study.ask()
      if surplus(study, trial, self.n_trials):
        trial.set_user_attr("surplus", True)
        study.tell(trial, state=TrialState.FAIL)
        continue
      try:
        value = self.run_trial(trial)
      except TrialFailed as e:
        self.say(f"trial {trial.number} failed: {e}")
        study.tell(trial, state=TrialState.FAIL)
        continue
      except _Pruned as e:
        self.say(f"trial {trial.number} pruned at step {e.step}")
        study.tell(trial, state=TrialState.PRUNED)
        continue
      except (KeyboardInterrupt, Interrupted) as e:
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        self.say(f"interrupted: trial {trial.number} is queued again and resumes from its "
                 "checkpoint when a worker runs")
        return e.code if isinstance(e, Interrupted) else 130
      except UserError:
        study.tell(trial, state=TrialState.FAIL)
        raise
      study.tell(trial, value)
      best = study.best_trial
      self.say(f"trial {trial.number}: {self.d['objective']}={value:.4f}; best: trial "
               f"{best.number} ({best.value:.4f})")
    return 0 if self.stopping is None else 128 + self.stopping

  def run_trial(self, trial) -> float:
    point = {p.key: format_value(p.suggest(trial, self.grid)) for p in self.space}
    home = runs_lib.point_dir(self.root, point)
    seeds = self.d["seeds"]
    workdirs = [runs_lib.seed_dir(home, s) for s in seeds]
    trial.set_user_attr("workdir", str(home.relative_to(self.root)))
    trial.set_user_attr("worker", self.name)
    where = " ".join(f"{k}={v}" for k, v in point.items())
    retry = trial.user_attrs.get("retry_of")
    if all(runs_lib.finished(w) for w in workdirs):
      self.say(f"trial {trial.number} [{where}]: its runs have finished already; reusing them")
      return self.value(trial, workdirs)
    self.wait_while_busy(trial, [home, *workdirs])
    again = "" if retry is None else f" (retry of trial {retry})"
    self.say(f"trial {trial.number} [{where}] started{again}")
    spec = {"config": self.d["config"], "set": self.d["set"], "point": point,
            "seeds": seeds, "home": str(home), "vmap_seeds": self.d["vmap_seeds"],
            "sweep": {"study": self.d["study"], "trial": trial.number,
                      "params": [f"{k}={v}" for k, v in point.items()]}}
    home.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(home / "log.txt", "a") as log:
      proc = subprocess.Popen([sys.executable, "-m", "metricattn.study", json.dumps(spec)],
                              stdout=log, stderr=subprocess.STDOUT,
                              preexec_fn=_die_with_parent if sys.platform == "linux" else None)
      try:
        self.watch(proc, trial, workdirs)
      except BaseException:
        stop(proc)
        raise
    self.check_stop()
    if proc.returncode != 0:
      raise TrialFailed(f"exit {proc.returncode} after {time.perf_counter() - t0:.0f} s; "
                        f"see {home / 'log.txt'}")
    return self.value(trial, workdirs)

  def value(self, trial, workdirs: list[Path]) -> float:
    values = objective_values(workdirs, self.d["objective"])
    trial.set_user_attr("values", values)
    return sum(values) / len(values)

  def beat(self, trial) -> None:
    if time.time() - self.last_beat >= self.heartbeat:
      self.last_beat = time.time()
      trial.set_user_attr("heartbeat", self.last_beat)

  def wait_while_busy(self, trial, dirs: list[Path]) -> None:
    """Waits while another process trains in one of `dirs` (the same parameters asked twice,
    or the run of a killed worker still writing its checkpoint)."""
    self.last_beat = 0.0
    said = False
    while any(runs_lib.busy(d) for d in dirs):
      if not said:
        self.say(f"trial {trial.number}: {dirs[0]} is in use by another process; waiting")
        said = True
      self.beat(trial)
      self.check_stop()
      time.sleep(self.poll)

  def watch(self, proc, trial, workdirs: list[Path]) -> None:
    """Until the trial's process ends: heartbeats, intermediate values, pruning."""
    reported: set[int] = set()
    self.last_beat = 0.0
    while True:
      self.beat(trial)
      finished = proc.poll() is not None
      for step, value in intermediate(workdirs, self.d["objective"]).items():
        if step not in reported:
          reported.add(step)
          trial.report(value, step)
          if not finished and trial.should_prune():
            stop(proc)
            raise _Pruned(step)
      if finished:
        return
      self.check_stop()
      try:
        proc.wait(timeout=self.poll)
      except subprocess.TimeoutExpired:
        pass


class _Pruned(Exception):
  def __init__(self, step: int):
    super().__init__(step)
    self.step = step


def stop(proc) -> None:
  """Asks a trial's process to stop (it writes a checkpoint) and waits for it."""
  if proc.poll() is None:
    proc.send_signal(signal.SIGTERM)
    try:
      proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


# ---------------------------------------------------------------- the command

def definition_of(a, root: Path) -> dict:
  """What every worker of the study must share (ROOT/study.json)."""
  return {"study": a.study or root.resolve().name,
          "storage": shown_storage(a.storage or str(root / "optuna.journal")),
          "storage_url": a.storage or str(root / "optuna.journal"),
          "config": a.config, "set": list(a.set), "space": [p.text for p in a.parsed_space],
          "sampler": a.sampler, "seeds": a.parsed_seeds, "vmap_seeds": a.vmap_seeds,
          "objective": a.objective, "direction": a.direction, "pruner": a.pruner,
          "trials": a.trials}


def main(a, argv: list[str]) -> int:
  """`metricattn.sweep` with a search: checks everything, then works (or starts
  `--workers` local workers, each running the same command)."""
  from metricattn.cli import fail
  from metricattn.sweep import check_points, parse_seeds, point_config
  try:
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
    base = point_config(a.config, {}, a.set)
    definition = definition_of(a, a.root)
    recorded = {k: v for k, v in definition.items() if k != "storage_url"}
    check_definition(a.root, recorded)
    sampler = make_sampler(a.sampler, a.parsed_space)
    pruner = make_pruner(a.pruner, int(base.train.steps), int(base.train.eval_every))
    study = open_study(definition, sampler, pruner)
    record_definition(a.root, recorded)
  except UserError as e:
    fail(str(e))
  if a.workers > 1:
    procs = [subprocess.Popen([sys.executable, "-m", "metricattn.sweep", *argv, "--workers",
                               "1", "--worker-name", f"worker {i}"]) for i in range(a.workers)]
    try:
      codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
      codes = [p.wait() for p in procs]
    return max([c if c > 0 else 128 - c for c in codes if c], default=0)  # -N: signal N
  worker = Worker(definition, a.root, a.parsed_space, a.trials, a.heartbeat,
                  name=a.worker_name)
  worker.say(f"study {definition['study']} ({definition['storage']}): {a.sampler} sampler, "
             f"{a.trials} trials, objective {a.objective} ({a.direction})")
  signal.signal(signal.SIGTERM, worker.on_sigterm)
  try:
    code = worker.run(study)
  except UserError as e:
    fail(str(e))
  worker.say(summary_line(study, a.objective))
  return code


def summary_line(study, objective: str) -> str:
  from optuna.trial import TrialState
  trials = study.get_trials(deepcopy=False)
  count = {s: sum(t.state == s for t in trials) for s in TrialState}
  fails = sum(t.state == TrialState.FAIL for t in counted(trials))
  line = (f"study {study.study_name}: {count[TrialState.COMPLETE]} complete, "
          f"{count[TrialState.PRUNED]} pruned, {fails} failed, "
          f"{count[TrialState.RUNNING] + count[TrialState.WAITING]} running or queued")
  if count[TrialState.COMPLETE]:
    best = study.best_trial
    line += f"; best trial {best.number}: {objective}={best.value:.4f} {best.params}"
  return line



# ---------------------------------------------------------------- the report

def report_section(root: Path, top: int = 5) -> tuple[list[str], list[tuple[str, str, str]]]:
  """(markdown lines, figures) for `metricattn.report` on a study's root: the best trials,
  optuna_history.png and, with >= 2 complete trials, optuna_importance.png."""
  import warnings
  from optuna.trial import TrialState
  from metricattn import plots
  from metricattn.reporting import markdown_table
  d = load_definition(root)
  url = d["storage"]
  if "://" not in url and not Path(url).exists() and (root / Path(url).name).exists():
    url = str(root / Path(url).name)  # a journal in the root, reported from another directory
  d["storage_url"] = url
  try:
    study = open_study(d, create=False)
  except (UserError, KeyError) as e:  # e.g. a database whose password is not recorded
    return ["## Study", "", f"Study `{d['study']}` not read: {e}", ""], []
  trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
  sign = -1 if d["direction"] == "max" else 1
  best = sorted(trials, key=lambda t: (sign * t.value, t.number))[:top]
  keys = [p.partition("=")[0].strip() for p in d["space"]]
  rows = [[t.number, f"{t.value:.4f}", *[format_value(t.params.get(k)) for k in keys],
           t.user_attrs.get("workdir", "")] for t in best]
  lines = ["## Study", "",
           f"Optuna study `{study.study_name}` ({d['storage']}): {d['sampler']} sampler over "
           f"`{' '.join(d['space'])}`, seeds {d['seeds']} per trial, objective "
           f"`{d['objective']}` ({d['direction']}imised; a trial's value is the mean over its "
           f"seeds); {len(trials)} of {len(study.trials)} trials complete.", "",
           f"Best {len(best)} trials:", "",
           *markdown_table(["trial", d["objective"], *keys, "workdir"], rows), ""]
  figures = []
  plt = plots._pyplot()
  from optuna.visualization import matplotlib as ov
  # optuna's plots set a style: rc_context keeps it from the report's other figures
  with warnings.catch_warnings(), plt.rc_context():
    warnings.simplefilter("ignore")  # optuna's ExperimentalWarning
    if trials:
      ax = ov.plot_optimization_history(study, target_name=d["objective"])
      ax.figure.savefig(root / "optuna_history.png", dpi=120, bbox_inches="tight")
      plt.close(ax.figure)
      figures.append(("optuna_history.png", "optimisation history",
                      f"Optuna's optimisation history: {d['objective']} of each complete trial "
                      "and the best so far."))
    try:
      ax = ov.plot_param_importances(study)
    except (RuntimeError, ValueError) as e:
      lines += [f"No parameter importances: {' '.join(str(e).split())}", ""]
    else:
      ax.figure.savefig(root / "optuna_importance.png", dpi=120, bbox_inches="tight")
      plt.close(ax.figure)
      figures.append(("optuna_importance.png", "parameter importances",
                      "Optuna's parameter importances (fANOVA) for the objective."))
  return lines, figures


# ---------------------------------------------------------------- one trial's process

def train_trial(spec: dict) -> None:
  """Trains one trial's seeds (vmapped in one program, or one after the other) in its
  workdirs; its config is the sweep's, plus `sweep` and, for wandb, the study as group."""
  from metricattn.sweep import point_config
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


if __name__ == "__main__":
  from metricattn.cli import enable_compilation_cache, run
  enable_compilation_cache()
  try:
    run(train_trial, json.loads(sys.argv[1]))
  except Interrupted as e:
    print(e, file=sys.stderr)
    sys.exit(e.code)
