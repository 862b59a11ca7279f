"""Optuna studies (metricattn/study/): two workers on one storage, a killed worker's trial
resumed from its checkpoint, a grid study equal to the `--grid` sweep, pruning from
metrics.jsonl, bad spaces as one line, the report's study section, wandb groups."""

import json
import os
import signal
import subprocess
import sys
import time
import types

import optuna
import pytest

from helpers import ROOT, tiny_moons
from metricattn import comparison, grid, sweep
from metricattn.errors import UserError
from metricattn.restore import restore
from metricattn.study import space, storage, worker
from metricattn.writers import MetricWriter

CONFIG = "--config=configs/moons_ipn.py"
TINY = ["--set", "train.steps=10", "train.log_every=10", "train.eval_every=10",
        "train.checkpoint_every=10"]
GRID = ["attention=softmax,l2", "optimizer.lr=1e-3,3e-3", "optimizer.weight_decay=1e-4,0"]


def load(root, name=None):
  journal = storage.open_storage(str(root / "optuna.journal"))
  return optuna.load_study(study_name=name or root.name, storage=journal)


def one_error_line(capsys, args, match: str) -> None:
  with pytest.raises(SystemExit) as e:
    sweep.main(args)
  err = capsys.readouterr().err
  assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
  assert match in err, err


# ---------------------------------------------------------------- two workers, a grid

@pytest.fixture(scope="module")
def grid_study(tmp_path_factory):
  """8 Moon trials (the 2x2x2 grid) trained by two local workers sharing one journal."""
  root = tmp_path_factory.mktemp("study") / "grid"
  out = subprocess.run([sys.executable, "-m", "metricattn.sweep", CONFIG, "--grid", *GRID,
                        "--sampler", "grid", "--workers", "2", "--objective",
                        "test/accuracy", "--root", str(root), *TINY],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout + out.stderr
  return root, out.stdout


def test_two_workers_finish_eight_trials_each_run_once(grid_study):
  root, stdout = grid_study
  trials = load(root).trials
  assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 8
  assert len({tuple(sorted(t.params.items())) for t in trials}) == 8
  # Named by their launcher's pid too: two launchers' workers are told apart.
  names = {t.user_attrs["worker"] for t in trials}
  assert len(names) == 2 and {n.split(" of ")[0] for n in names} == {"worker 0", "worker 1"}
  assert len({n.split(" of ")[1] for n in names}) == 1
  for t in trials:
    home = root / t.user_attrs["workdir"]
    log = (home / "log.txt").read_text()
    assert log.count(", starting") == 1 and "resuming" not in log, log  # trained once
    summary = json.loads((home / "seed=0" / "summary.json").read_text())
    assert t.value == summary["test/accuracy"]
    config = json.loads((home / "seed=0" / "config.json").read_text())
    assert config["sweep"] == {"study": "grid", "trial": t.number,
                               "params": t.user_attrs["workdir"].split("/")}
    assert config["wandb"]["group"] == "grid"
  assert "study grid: 8 complete, 0 pruned, 0 failed" in stdout


def test_grid_study_equals_the_grid_sweep(grid_study, capsys):
  """The same runs as `--grid`: its plan's workdirs and configs, and `--grid` on the study's
  root finds every run finished."""
  root, _ = grid_study
  planned = {w for ws, _ in grid.plan("configs/moons_ipn.py", GRID, [0], root, TINY[1:])
             for w in ws}
  assert {p.parent for p in root.rglob("config.json")} == planned
  configs = grid.check_points("configs/moons_ipn.py", grid.grid_points(GRID), TINY[1:])
  for point, config in zip(grid.grid_points(GRID), configs):
    trained = json.loads((grid.plan("configs/moons_ipn.py", GRID, [0], root, TINY[1:])
                          [grid.grid_points(GRID).index(point)][0][0] / "config.json")
                         .read_text())
    del trained["sweep"], trained["wandb"]["group"], trained["wandb"]["name"]
    assert trained == json.loads(config.to_json())
  assert sweep.main([CONFIG, "--grid", *GRID, "--root", str(root), *TINY]) == 0
  assert "8 runs, 8 already finished, 0 to run" in capsys.readouterr().out
  config, *_, step = restore(min(planned))  # what `evaluate` and `robustness` read
  assert step == 10 and config.sweep.study == "grid"


def test_report_on_a_study_root_adds_best_trials_and_optuna_figures(grid_study):
  root, _ = grid_study
  text = comparison.write_report(root)
  assert "## Study" in text and "Best 5 trials:" in text
  best = max(load(root).trials, key=lambda t: (t.value, -t.number))
  assert f"| {best.number} | {best.value:.4f} |" in text
  for png in ("optuna_history.png", "optuna_importance.png", "curves.png"):
    assert (root / png).stat().st_size > 1000
  # The kinds are compared across trials (each trial is its own group of runs).
  assert "Complete trials by `attention`" in text and "so this is no paired comparison" in text
  for kind in ("softmax", "l2"):
    assert f"| {kind} | 4 |" in text


# ---------------------------------------------------------------- a killed worker

def test_killed_worker_trial_resumes_from_its_checkpoint(tmp_path):
  root = tmp_path / "kill"
  cmd = [sys.executable, "-m", "metricattn.sweep", CONFIG, "--root", str(root),
         "--space", "optimizer.lr=loguniform(1e-3,1e-2)", "--sampler", "random",
         "--trials", "1", "--objective", "test/accuracy", "--heartbeat", "1",
         "--set", "train.steps=1500", "train.log_every=50", "train.eval_every=500",
         "train.checkpoint_every=50"]
  first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  deadline = time.time() + 120
  while not any(p.name.isdigit() for p in root.glob("*/seed=0/checkpoints/*")):
    assert first.poll() is None and time.time() < deadline, first.stdout.read()
    time.sleep(0.1)
  os.kill(first.pid, signal.SIGKILL)  # the worker dies; its trial's process gets SIGTERM
  first.wait()
  second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert second.returncode == 0, second.stdout + second.stderr
  assert "trial 0: no heartbeat" in second.stdout and "(retry of trial 0)" in second.stdout
  old, new = load(root).trials
  assert old.state.name == "FAIL" and new.state.name == "COMPLETE"
  assert new.params == old.params and new.user_attrs["retry_of"] == 0
  home = root / new.user_attrs["workdir"] / "seed=0"
  log = (home.parent / "log.txt").read_text()
  assert "SIGTERM: stopped at step" in log
  resumed_at = int(log.split("resuming at step ")[1].split()[0])
  assert 50 <= resumed_at < 1500
  changes = [json.loads(l) for l in (home / "config_changes.jsonl").read_text().splitlines()]
  assert changes == [{"step": resumed_at, "key": "sweep.trial", "old": 0, "new": 1,
                      "forced": False}]
  steps = [r["step"] for r in map(json.loads, (home / "metrics.jsonl").read_text().splitlines())
           if r["split"] == "train"]
  assert steps == list(range(50, 1501, 50))  # one record per step: continued, not redone
  assert new.value == json.loads((home / "summary.json").read_text())["test/accuracy"]


# ---------------------------------------------------------------- pruning, no training

def test_pruning_stops_the_trial_process_from_metrics_jsonl(tmp_path):
  s = optuna.create_study(direction="maximize", pruner=storage.make_pruner("median", 40, 10))
  dist = {"optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
  for lr in (1e-3, 2e-3):
    s.add_trial(optuna.create_trial(params={"optimizer.lr": lr}, distributions=dist,
                                    value=0.9, intermediate_values={10: 0.9, 20: 0.9}))
  trial = s.ask()
  workdir = tmp_path / "seed=0"
  workdir.mkdir()
  (workdir / "metrics.jsonl").write_text("".join(
      json.dumps({"step": step, "split": "test", "accuracy": 0.5, "loss": 1.0}) + "\n"
      for step in (10, 20)))
  w = worker.Worker({"objective": "test/accuracy", "sampler": "tpe"}, tmp_path, [], 4,
                        heartbeat=1.0, poll=0.05, name="w")
  proc = subprocess.Popen(["sleep", "60"])
  with pytest.raises(worker._Pruned) as e:
    w.watch(proc, trial, [workdir])
  assert e.value.step == 10 and proc.poll() == -signal.SIGTERM
  frozen = s.trials[-1]
  assert frozen.intermediate_values == {10: 0.5} and "heartbeat" in frozen.user_attrs
  with pytest.raises(UserError, match="val/accuracy is not among the evaluations"):
    worker.intermediate([workdir], "val/accuracy")


# ---------------------------------------------------------------- bad input, one line each

@pytest.mark.parametrize("space, match", [
    ("optimizer.lrr=loguniform(1e-4,1e-2)", "unknown config key 'optimizer.lrr'; did you mean: "
     "optimizer.lr"),
    ("colour=choice(red,blue)", "unknown config argument 'colour'"),
    ("optimizer.lr=gauss(0,1)", "unknown distribution 'gauss'"),
    ("optimizer.lr=loguniform(1e-2,1e-4)", "low 1e-2 > high 1e-4"),
    ("model.depth=int(4,1)", "low 4 > high 1"),
    ("optimizer.lr=loguniform(0,1)", "loguniform needs low > 0"),
    ("model.depth=int(1.5,3)", "int takes (low,high) or (low,high,step) integers"),
    ("model.depth=uniform(1,3)", "must be a int"),
    ("model.attention=choice(softmax,cosine)", "cosine"),
    ("optimizer.lr", "is not of the form key=distribution(args)"),
])
def test_bad_space_is_one_line_before_any_trial(space, match, tmp_path, capsys):
  root = tmp_path / "r"
  one_error_line(capsys, [CONFIG, "--space", space, "--trials", "2", "--root", str(root)],
                 match)
  assert not root.exists()


def test_other_bad_study_input_is_one_line(tmp_path, capsys):
  root = tmp_path / "r"
  lr = ["--space", "optimizer.lr=loguniform(1e-4,1e-2)"]
  one_error_line(capsys, [CONFIG, *lr, "--sampler", "grid", "--root", str(root)],
                 "--sampler grid takes choice(...) or int(...) only")
  one_error_line(capsys, [CONFIG, *lr, "--root", str(root)], "--sampler tpe needs --trials N")
  one_error_line(capsys, [CONFIG, *lr, "--trials", "2", "--objective", "accuracy",
                          "--root", str(root)], "is not SPLIT/METRIC")
  one_error_line(capsys, [CONFIG, *lr, *lr, "--trials", "2", "--root", str(root)],
                 "key 'optimizer.lr' appears more than once")
  assert not root.exists()
  storage.record_definition(root, {"study": "a", "space": ["x=choice(1,2)"], "trials": 2})
  one_error_line(capsys, [CONFIG, *lr, "--trials", "2", "--study", "a", "--root", str(root)],
                 "space: ['x=choice(1,2)'] -> ['optimizer.lr=loguniform(1e-4,1e-2)']")


def test_space_file_and_grid_values(tmp_path):
  path = tmp_path / "space.txt"
  path.write_text("# the Moon IPN's learning rate and width\noptimizer.lr=loguniform(1e-4,1e-2)\n"
                  "\nmodel.width=int(8,32,8)  # steps of 8\n")
  params = space.parse_space(space.read_space_file(path))
  assert [(p.key, p.kind, p.args) for p in params] == [
      ("optimizer.lr", "loguniform", (1e-4, 1e-2)), ("model.width", "int", (8, 32, 8))]
  assert params[1].grid_values() == [8, 16, 24, 32]
  assert space.point_value(0.1 + 0.2) == "0.30000000000000004"  # exact: the workdir's name


# ---------------------------------------------------------------- wandb groups the trials

def test_wandb_groups_a_study_and_names_the_trial(tmp_path, monkeypatch):
  calls = []
  fake = types.SimpleNamespace(init=lambda **kw: calls.append(kw) or
                               types.SimpleNamespace(finish=lambda: None))
  monkeypatch.setitem(sys.modules, "wandb", fake)
  config = tiny_moons(wandb__mode="offline")
  config.wandb.group, config.wandb.name = "my-study", "optimizer.lr=0.001/seed=0"
  MetricWriter(tmp_path, config, 10, 0, progress=False).close()
  assert calls[0]["group"] == "my-study" and calls[0]["name"] == "optimizer.lr=0.001/seed=0"
