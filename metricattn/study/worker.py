"""A study's worker: the loop that trains trials until the study is done.

Each trial is trained by its own process (`metricattn.study.trial`); the worker beats a
heartbeat into the trial, reports the objective's evaluations from metrics.jsonl to Optuna,
prunes, retries the trials of workers that died, and keeps the study's budget of trials.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from metricattn import runs as runs_lib
from metricattn.children import die_with_parent
from metricattn.errors import Interrupted, UserError
from metricattn.fileio import read_json, read_jsonl
from metricattn.study.space import Param, point_value

STALE_BEATS = 3  # a running trial without a heartbeat for this many intervals is retried

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
    point = {p.key: point_value(p.suggest(trial, self.grid)) for p in self.space}
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
      proc = subprocess.Popen([sys.executable, "-m", "metricattn.study.trial",
                               json.dumps(spec)],
                              stdout=log, stderr=subprocess.STDOUT,
                              preexec_fn=die_with_parent if sys.platform == "linux" else None)
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


def summary_line(study, objective: str) -> str:
  """The study's trials in one line: complete, pruned, failed, running; the best one."""
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
