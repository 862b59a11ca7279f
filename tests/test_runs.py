"""Runs you can trust: refused resumes, the workdir lock, recorded config changes, wandb
fallback, sweep grids, a damaged summary, SIGTERM/SIGINT, vmapped-seed evaluation, RNG streams."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from metricattn import evaluate, report, robustness, runs, sweep, writers
from metricattn.errors import UserError
from metricattn.train import dropout_key, train_and_evaluate
from metricattn.fileio import read_jsonl
from tests.helpers import ROOT, cli, tiny_moons

TINY_FLAGS = ["--config.train.log_every=10", "--config.train.eval_every=20",
              "--config.train.checkpoint_every=20"]  # the CLI spelling of tiny_moons()


def one_error_line(out: subprocess.CompletedProcess, message: str) -> str:
  """The single `error:` line on stderr (exit code 2), which contains `message`."""
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 2, out.stderr
  assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr
  assert "Traceback" not in out.stdout + out.stderr
  return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(workdir, summary) of a finished tiny metric Moon run; tests work on copies of it."""
  workdir = tmp_path_factory.mktemp("trained") / "run"
  return workdir, train_and_evaluate(tiny_moons(), workdir)


@pytest.fixture
def run_copy(trained, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(trained[0], workdir)
  return workdir


# ---------------------------------------------------------------- 1. a refused resume

@pytest.mark.parametrize("overrides, listed", [
    (dict(model__width=32), "model.width: 16 -> 32"),
    (dict(model__attention="l2"), "model.attention: 'metric' -> 'l2'"),
])
def test_refused_resume_keeps_config_json(trained, run_copy, overrides, listed):
  before = (run_copy / "config.json").read_bytes()
  with pytest.raises(UserError, match="holds a run with other settings") as e:
    train_and_evaluate(tiny_moons(**overrides), run_copy)
  assert listed in str(e.value) and "--allow_config_change" in str(e.value)
  assert (run_copy / "config.json").read_bytes() == before
  assert not (run_copy / runs.CHANGES).exists()
  result = evaluate.evaluate_workdir(run_copy)
  assert result["step"] == 40
  assert result["test/accuracy"] == trained[1]["test/accuracy"]


# ---------------------------------------------------------------- 2. one process per workdir

def test_a_held_workdir_is_refused_and_a_stale_lock_is_not(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  args = ["metricattn.main", "--config=configs/moons_ipn.py", f"--workdir={workdir}",
          "--config.train.steps=5"]
  lock = runs.Lock(workdir)
  try:
    busy = cli(*args)
  finally:
    lock.release()
  assert busy.returncode != 0
  one_error_line(busy, f"in use by another run (pid {os.getpid()})")
  assert not (workdir / "config.json").exists()
  free = cli(*args)
  assert free.returncode == 0, free.stderr
  assert runs.finished(workdir)
  (workdir / ".lock").write_text("999999\n")  # left by a process that died; nobody holds it
  stale = cli(*args)
  assert stale.returncode == 0, stale.stderr
  assert "in use" not in stale.stderr


# ---------------------------------------------------------------- 3. config drift

def test_changed_settings_need_the_flag_and_are_recorded(run_copy):
  before = (run_copy / "config.json").read_bytes()
  with pytest.raises(UserError, match=r"optimizer\.lr: 0\.001 -> 0\.01"):
    train_and_evaluate(tiny_moons(optimizer__lr=0.01), run_copy)
  assert (run_copy / "config.json").read_bytes() == before
  assert not (run_copy / runs.CHANGES).exists()

  train_and_evaluate(tiny_moons(optimizer__lr=0.01), run_copy, allow_config_change=True)
  assert read_jsonl(run_copy / runs.CHANGES) == [
      {"step": 40, "key": "optimizer.lr", "old": 0.001, "new": 0.01, "forced": True}]
  assert json.loads((run_copy / "config.json").read_text())["optimizer"]["lr"] == 0.01

  # Extending the run is harmless: allowed without the flag, recorded as not forced.
  summary = train_and_evaluate(tiny_moons(optimizer__lr=0.01, train__steps=60), run_copy)
  assert summary["step"] == 60
  assert read_jsonl(run_copy / runs.CHANGES)[1:] == [
      {"step": 40, "key": "train.steps", "old": 40, "new": 60, "forced": False}]
  assert max(r["step"] for r in read_jsonl(run_copy / "metrics.jsonl")) == 60


def test_allow_config_change_flag_on_the_command_line(run_copy):
  args = ["metricattn.main", "--config=configs/moons_ipn.py", f"--workdir={run_copy}",
          "--config.train.steps=40", *TINY_FLAGS, "--config.optimizer.lr=0.01"]
  one_error_line(cli(*args), "optimizer.lr: 0.001 -> 0.01")
  forced = cli(*args, "--allow_config_change")
  assert forced.returncode == 0, forced.stderr
  assert read_jsonl(run_copy / runs.CHANGES) == [
      {"step": 40, "key": "optimizer.lr", "old": 0.001, "new": 0.01, "forced": True}]


# ---------------------------------------------------------------- 5. wandb unreachable

def offline_within_5_seconds(workdir):
  said = []
  t = time.perf_counter()
  mode = writers.reachable_wandb_mode(workdir, said.append)
  assert time.perf_counter() - t < 5
  assert mode == "offline"
  assert len(said) == 1 and "\n" not in said[0] and said[0].startswith("wandb: "), said
  assert "offline" in said[0] and "wandb sync" in said[0]
  return said[0]


def test_wandb_without_api_key_logs_offline(tmp_path, monkeypatch):
  monkeypatch.delenv("WANDB_API_KEY", raising=False)
  monkeypatch.delenv("WANDB_BASE_URL", raising=False)
  monkeypatch.delenv("NETRC", raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
  assert "no wandb API key" in offline_within_5_seconds(tmp_path)


def test_wandb_with_unreachable_server_logs_offline(tmp_path, monkeypatch):
  monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
  monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
  assert "127.0.0.1:9 did not answer" in offline_within_5_seconds(tmp_path)


# ---------------------------------------------------------------- 6. one-line errors

def test_config_file_with_a_syntax_error(tmp_path):
  bad = tmp_path / "bad_config.py"
  bad.write_text("def get_config(:\n  return None\n")
  one_error_line(cli("metricattn.main", f"--config={bad}", f"--workdir={tmp_path / 'w'}"),
                 "cannot load --config")


def test_workdir_that_is_a_file(tmp_path):
  path = tmp_path / "a_file"
  path.write_text("not a directory\n")
  one_error_line(cli("metricattn.main", "--config=configs/moons_ipn.py", f"--workdir={path}",
                     "--config.train.steps=5"), "exists and is not a directory")
  assert path.read_text() == "not a directory\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_workdir(tmp_path):
  workdir = tmp_path / "ro"
  workdir.mkdir()
  workdir.chmod(0o555)
  try:
    one_error_line(cli("metricattn.main", "--config=configs/moons_ipn.py",
                       f"--workdir={workdir}", "--config.train.steps=5"), "not writable")
  finally:
    workdir.chmod(0o755)


def test_bad_seed_list_in_main_and_sweep(tmp_path):
  one_error_line(cli("metricattn.main", "--config=configs/moons_ipn.py", "--seeds=abc",
                     f"--workdir={tmp_path / 'w'}"), "is not a seed list")
  root = tmp_path / "root"
  one_error_line(cli("metricattn.sweep", "--config=configs/moons_ipn.py", "--seeds", "abc",
                     "--root", str(root)), "is not a seed list")
  assert not root.exists()


# ---------------------------------------------------------------- 8. sweep grids

SWEEP = ["--config=configs/moons_ipn.py", "--grid", "optimizer.lr=3e-3,1e-3", "--set",
         "train.steps=5", "train.eval_every=5", "train.checkpoint_every=5", "train.log_every=5",
         "--progress-every", "0"]


@pytest.fixture(scope="module")
def lr_sweep(tmp_path_factory):
  """A sweep root of two tiny runs over a dotted grid key."""
  root = tmp_path_factory.mktemp("sweep") / "root"
  assert sweep.main([*SWEEP, "--root", str(root)]) == 0
  return root


@pytest.mark.parametrize("grid, message", [
    ("attention=softmax,,=x", "--grid 'attention=softmax,,=x' is not of the form"),
    ("attention=softmax,dot",
     "grid point attention=dot: unknown attention kind 'dot'; allowed: softmax, l2, metric"),
])
def test_bad_grid_fails_before_launching(tmp_path, capsys, grid, message):
  root = tmp_path / "root"
  with pytest.raises(SystemExit) as e:
    sweep.main(["--config=configs/moons_ipn.py", "--grid", grid, "--root", str(root)])
  assert e.value.code == 2
  out = capsys.readouterr()
  lines = out.err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.err
  assert "runs," not in out.out  # nothing was planned or launched
  assert not root.exists()


def test_dotted_grid_key_is_typed_as_the_config_types_it(lr_sweep):
  assert sorted(p.name for p in lr_sweep.iterdir()) == ["optimizer.lr=1e-3", "optimizer.lr=3e-3"]
  for name, lr in (("optimizer.lr=3e-3", 0.003), ("optimizer.lr=1e-3", 0.001)):
    workdir = lr_sweep / name / "seed=0"
    value = json.loads((workdir / "config.json").read_text())["optimizer"]["lr"]
    assert isinstance(value, float) and value == lr
    assert runs.finished(workdir)
    assert json.loads((workdir / "summary.json").read_text())["step"] == 5


# ---------------------------------------------------------------- 7. a truncated summary.json

def test_truncated_summary_is_skipped_by_report_and_rerun_by_sweep(lr_sweep, tmp_path, capsys):
  root = tmp_path / "root"
  shutil.copytree(lr_sweep, root)
  damaged = root / "optimizer.lr=1e-3" / "seed=0"
  text = (damaged / "summary.json").read_bytes()
  (damaged / "summary.json").write_bytes(text[:len(text) // 2])
  capsys.readouterr()

  assert report.main([str(root)]) == 0
  err = capsys.readouterr().err
  warnings = [l for l in err.splitlines() if l.startswith("warning:")]
  assert len(warnings) == 1 and str(damaged) in warnings[0], err
  assert (root / "report.md").exists()
  assert "optimizer.lr=3e-3" in (root / "report.md").read_text()

  assert not runs.finished(damaged)
  assert runs.finished(root / "optimizer.lr=3e-3" / "seed=0")
  assert sweep.main([*SWEEP, "--root", str(root)]) == 0
  assert "2 runs, 1 already finished, 1 to run" in capsys.readouterr().out
  assert runs.finished(damaged)
  assert json.loads((damaged / "summary.json").read_text())["step"] == 5


# ---------------------------------------------------------------- 9. SIGTERM and SIGINT

STEPS = 3000
SIGNAL_RUN = ["metricattn.main", "--config=configs/moons_ipn.py:attention=metric",
              f"--config.train.steps={STEPS}", "--config.train.checkpoint_every=1000"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
  out = cli(*SIGNAL_RUN, f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr
  return (workdir / "metrics.jsonl").read_bytes()


def start_logging_run(args: list[str], workdir, seconds: float, stdout=subprocess.PIPE):
  """`python -m ARGS` started, once its metrics.jsonl holds two rows (killed on failure)."""
  proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=stdout,
                          stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.monotonic() + seconds
    while len(read_lines(workdir / "metrics.jsonl")) < 2:
      assert proc.poll() is None, proc.communicate()[1]
      assert time.monotonic() < deadline, f"no metrics after {seconds:g} s"
      time.sleep(0.01)
  except BaseException:
    proc.kill()
    proc.wait()
    raise
  return proc


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_with_a_checkpoint_and_resumes_exactly(uninterrupted, tmp_path, signum,
                                                             code):
  workdir = tmp_path / "run"
  proc = start_logging_run([*SIGNAL_RUN, f"--workdir={workdir}"], workdir, 60)
  try:
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  if proc.returncode == 0:
    pytest.skip(f"the run finished all {STEPS} steps before {signum.name} arrived")
  name = signum.name
  assert proc.returncode == code, stderr
  assert "Traceback" not in stdout + stderr
  last = stderr.strip().splitlines()[-1]
  match = re.match(rf"{name}: stopped at step (\d+) .*checkpoint", last)
  assert match, stderr
  step = int(match.group(1))
  if step >= STEPS or step % 1000 == 0:
    pytest.skip(f"{name} landed at step {step}, a regular checkpoint: not mid-run")
  assert (workdir / "checkpoints" / str(step)).is_dir()
  assert not (workdir / "summary.json").exists()

  resumed = cli(*SIGNAL_RUN, f"--workdir={workdir}")
  assert resumed.returncode == 0, resumed.stderr
  assert f"resuming at step {step}" in resumed.stdout
  assert "Traceback" not in resumed.stderr
  assert (workdir / "metrics.jsonl").read_bytes() == uninterrupted


def read_lines(path):
  try:
    return path.read_text().splitlines()
  except OSError:
    return []


def test_second_sigint_during_shutdown_is_quiet_and_the_checkpoint_restores(tmp_path):
  """Ctrl-C twice: the second arrives while Python and JAX shut down (their atexit handlers,
  which printed a KeyboardInterrupt traceback): still the one line, exit 130; a half-written
  checkpoint that a second Ctrl-C mid-save leaves is removed by the next run."""
  workdir = tmp_path / "run"
  run = ["metricattn.main", "--config=configs/moons_ipn.py", f"--workdir={workdir}",
         "--config.train.checkpoint_every=20", "--config.train.log_every=10"]
  proc = start_logging_run([*run, "--config.train.steps=1000000"], workdir, 120,
                           stdout=subprocess.DEVNULL)
  try:
    proc.send_signal(signal.SIGINT)
    first = proc.stderr.readline()
    proc.send_signal(signal.SIGINT)  # at once: the process is exiting
    rest = proc.communicate(timeout=60)[1]
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == 130, first + rest
  assert rest == "", rest
  step = int(re.match(r"SIGINT: stopped at step (\d+) of 1000000 with a checkpoint", first)[1])
  half = workdir / "checkpoints" / f"{step + 1}.orbax-checkpoint-tmp-0"
  half.mkdir()  # what a second Ctrl-C during a save leaves
  resumed = cli(*run, f"--config.train.steps={step + 5}")
  assert resumed.returncode == 0, resumed.stderr
  assert f"resuming at step {step}" in resumed.stdout
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir())[-1] == str(step + 5)
  assert not half.exists()


def test_a_second_sigint_after_the_stop_checkpoint_keeps_the_runs_line():
  """The gaps the shutdown test cannot aim at: a second Ctrl-C after the stop's checkpoint
  is written is ignored until the run raises its Interrupted, and one that arrives while
  that Interrupted is under way still prints the run's line, not "before a checkpoint"."""
  from metricattn.errors import Interrupted
  from metricattn.main import interrupted_line
  from metricattn.train import Signals
  s = Signals()
  s.handle(signal.SIGINT, None)
  with pytest.raises(KeyboardInterrupt):
    s.handle(signal.SIGINT, None)  # still saving: stop at once
  s.saved = True
  s.handle(signal.SIGINT, None)  # saved: nothing to stop
  stop = Interrupted("SIGINT: stopped at step 7 of 9 with a checkpoint in w", 130)
  try:
    try:
      raise stop
    except Interrupted:
      raise KeyboardInterrupt
  except KeyboardInterrupt as e:
    assert interrupted_line(e) == (str(stop), 130)
  assert interrupted_line(KeyboardInterrupt())[0].startswith("interrupted before a checkpoint")


# ---------------------------------------------------------------- 10. vmapped seeds

def test_evaluate_and_robustness_on_vmapped_seeds(tmp_path):
  root = tmp_path / "attention=l2"
  out = cli("metricattn.main", "--config=configs/moons_ipn.py:attention=l2", "--seeds=0:2",
            f"--workdir={root}", "--config.train.steps=20", "--config.train.eval_every=20",
            "--config.train.checkpoint_every=20")
  assert out.returncode == 0, out.stderr
  assert not (root / "seed=1" / "checkpoints").exists()
  result = evaluate.evaluate_workdir(root / "seed=1")
  summary = json.loads((root / "seed=1" / "summary.json").read_text())
  assert result["step"] == 20
  assert result["test/accuracy"] == summary["test/accuracy"]
  assert not (root / "seed=1" / "checkpoints").exists()
  assert robustness.main([f"--workdir={tmp_path}", "--sigmas=0,0.3", "--eps=0,0.2",
                          "--pgd-steps=3"]) == 0
  for seed in (0, 1):
    assert (root / f"seed={seed}" / "robustness.json").exists()
  assert not (root / "seed=0" / "checkpoints").exists()


# ---------------------------------------------------------------- 13. RNG streams

@pytest.mark.parametrize("seed", [0, 1])
def test_dropout_key_is_no_parameter_init_key(seed):
  base = jax.random.key(seed)
  # Parameter initialisation (nnx.Rngs) draws fold_in(key(seed), n) for its n-th draw.
  rngs = nnx.Rngs(params=seed)
  for n in range(3):
    np.testing.assert_array_equal(jax.random.key_data(rngs.params()),
                                  jax.random.key_data(jax.random.fold_in(base, n)))
  draws = jax.vmap(lambda n: jax.random.key_data(jax.random.fold_in(base, n)))(
      jnp.arange(10_000, dtype=jnp.uint32))
  dropout = jax.random.key_data(dropout_key(seed))
  assert draws.shape == (10_000, *dropout.shape)
  assert not np.any(np.all(np.asarray(draws) == np.asarray(dropout), axis=1))
  assert len({tuple(row) for row in np.asarray(draws).tolist()}) == 10_000
