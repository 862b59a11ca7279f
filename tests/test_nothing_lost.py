"""Nothing a run wrote is lost: a kill while the metrics log is cut back on resume, a torn last
line, a full disk (a small tmpfs when the tests run as root, else a fault hook)."""

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from metricattn.checkpoint import DiskFull
from metricattn.fileio import read_jsonl
from metricattn.train import train_and_evaluate
from tests.helpers import ROOT, tiny_moons

ARGS = ["--config=configs/moons_ipn.py:attention=l2", "--config.train.steps=100",
        "--config.train.checkpoint_every=40", "--config.train.eval_every=20",
        "--config.train.log_every=10"]

# Runs `main` on WORKDIR; FAULT (python code) is run first, to plant a kill.
SCRIPT = """
import os, signal, sys
from metricattn import fileio, writers
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
{fault}
sys.argv = ["main", "--workdir=" + sys.argv[1], *sys.argv[2:]]
from absl import app
from metricattn import main
app.run(main.main, flags_parser=main.parse_flags)
"""
# Killed after logging step 70 (checkpoint at 40: a rerun resumes there).
KILL_AT_70 = """
write = writers.MetricWriter.write
def write(self, step, split, metrics, write=write):
  write(self, step, split, metrics)
  if step >= 70:
    die()
writers.MetricWriter.write = write
"""
# Killed at the first change to metrics.jsonl: cutting it back to the checkpoint or appending.
KILL_AT_FIRST_WRITE = """
os.truncate = die
fileio.write_atomic = die
writers.MetricWriter.write = die
"""


def run(workdir, fault=""):
  return subprocess.run([sys.executable, "-c", SCRIPT.format(fault=fault), str(workdir), *ARGS],
                        cwd=ROOT, capture_output=True, text=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("full")
  assert run(workdir).returncode == 0
  return read_jsonl(workdir / "metrics.jsonl")


def test_kill_while_the_log_is_cut_back_loses_no_row(tmp_path, uninterrupted):
  assert run(tmp_path, KILL_AT_70).returncode == -9
  before = read_jsonl(tmp_path / "metrics.jsonl")
  assert max(r["step"] for r in before) == 70
  assert run(tmp_path, KILL_AT_FIRST_WRITE).returncode == -9
  assert read_jsonl(tmp_path / "metrics.jsonl") == before  # nothing lost, nothing rewritten
  assert run(tmp_path).returncode == 0
  assert read_jsonl(tmp_path / "metrics.jsonl") == uninterrupted


def test_torn_last_line_is_dropped_with_a_warning(tmp_path, uninterrupted):
  assert run(tmp_path, KILL_AT_70).returncode == -9
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 71, "split": "trai')
  out = run(tmp_path)
  assert out.returncode == 0, out.stderr
  assert "dropped a torn last line" in out.stderr
  assert read_jsonl(tmp_path / "metrics.jsonl") == uninterrupted


def test_full_disk_at_the_first_write_is_one_line_and_leaves_no_workdir(tmp_path,
                                                                        monkeypatch):
  """The workdir's lock file is the first thing a run writes (the probe found a traceback)."""
  from metricattn import runs

  def full(self, workdir):
    (Path(workdir) / ".lock").touch()
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(runs.Lock, "__init__", full)
  workdir = tmp_path / "w"
  with pytest.raises(DiskFull, match=f"^no space left on device while writing {workdir}; no "
                     "checkpoint was written yet; free space and rerun the same command$"):
    train_and_evaluate(tiny_moons(), workdir)
  assert not workdir.exists()


def test_full_disk_while_logging_is_one_line(tmp_path, monkeypatch):
  from metricattn import writers
  write = writers.MetricWriter.write

  def full_at_30(self, step, split, metrics):
    if step >= 30:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
    write(self, step, split, metrics)

  monkeypatch.setattr(writers.MetricWriter, "write", full_at_30)
  config = tiny_moons(train__steps=60, train__checkpoint_every=20, train__log_every=10,
                      train__eval_every=20)
  with pytest.raises(DiskFull, match="^no space left on device while writing "
                     f"{tmp_path / 'metrics.jsonl'}; checkpoints up to step 20 are intact; "
                     "free space and rerun the same command$"):
    train_and_evaluate(config, tmp_path)


def mount_tmpfs(path, size):
  if os.geteuid() != 0:
    return False
  path.mkdir()
  return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                        capture_output=True).returncode == 0


def test_full_disk_during_a_checkpoint_is_one_line(tmp_path):
  disk = tmp_path / "disk"
  if not mount_tmpfs(disk, "400k"):
    pytest.skip("needs root and tmpfs to make a small disk")
  try:
    out = subprocess.run(
        [sys.executable, "-m", "metricattn.main", "--config=configs/moons_ipn.py",
         f"--workdir={disk / 'w'}", "--config.train.steps=400",
         "--config.train.checkpoint_every=20", "--config.train.keep_checkpoints=100",
         "--config.train.log_every=50"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: no space left on device while writing {disk / 'w'}")
    steps = sorted(int(p.name) for p in (disk / "w" / "checkpoints").iterdir()
                   if p.name.isdigit())
    assert lines[0].endswith(f"checkpoints up to step {steps[-1]} are intact; free space and "
                             "rerun the same command")
  finally:
    subprocess.run(["umount", str(disk)])


@pytest.fixture
def disk(tmp_path, monkeypatch):
  """(a directory, fill()): after fill() no write to the directory has room. A 400k tmpfs
  filled up when the tests run as root, else a fault hook (every file write is ENOSPC)."""
  path = tmp_path / "disk"
  if mount_tmpfs(path, "400k"):
    def fill():
      with open(path / "filler", "wb", buffering=0) as f:
        try:
          while True:
            f.write(b"\0" * 4096)
        except OSError as e:
          assert e.errno == errno.ENOSPC
    yield path, fill
    subprocess.run(["umount", str(path)])
  else:
    path.mkdir()
    fdopen = os.fdopen

    class Full:
      def __init__(self, f):
        self.f = f
      def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
      def __enter__(self):
        return self
      def __exit__(self, *exc):
        self.f.close()

    yield path, lambda: monkeypatch.setattr(os, "fdopen", lambda *a, **k: Full(fdopen(*a, **k)))


KEEP = "free space and rerun the same command"


def test_full_disk_while_writing_a_cache_is_one_line_and_keeps_the_old_file(disk):
  from metricattn.data.cache import load_guarded, save_checked
  from metricattn.fileio import NoSpace
  disk, fill = disk
  path = disk / "cache" / "spm_joint.model"
  save_checked(path, b"old")
  fill()
  with pytest.raises(NoSpace, match=f"^no space left on device while writing {path}; files "
                     f"written before are intact \\(written atomically\\); {KEEP}$"):
    save_checked(path, b"new" * 100_000)
  assert load_guarded(path, lambda p: p.read_bytes()) == b"old"  # its checksum still holds
  assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".sha256"]


def test_full_disk_while_writing_a_report_is_one_line_and_keeps_the_old_one(disk, capsys):
  from metricattn.report import main as report_main
  from tests.test_report import write_run
  root, fill = disk
  for kind in ("softmax", "l2"):
    for seed in (0, 1):
      write_run(root / f"attention={kind}" / f"seed={seed}", seed=seed, kind=kind,
                final=0.5 + seed / 10)
  assert report_main([str(root)]) == 0
  before = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
  fill()
  capsys.readouterr()
  assert report_main([str(root), "--target", "0.55"]) == 2
  err = capsys.readouterr().err
  assert len(err.splitlines()) == 1, err
  assert err.startswith(f"error: no space left on device while writing {root}/")
  assert err.endswith(f"; the runs and the report files written before are intact; {KEEP}\n")
  after = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
  after.pop("filler", None)
  assert after == before  # report.md, report.json and the figures as they were; no temp file


# ---------------------------------------------------------------- launchers own their children

SWEEP = [sys.executable, "-m", "metricattn.sweep", "--config=configs/moons_ipn.py",
         "--grid", "attention=softmax,l2", "--jobs", "2", "--progress-every", "0",
         "--set", "train.steps=1000000", "train.log_every=10", "train.eval_every=100000",
         "train.checkpoint_every=100000"]


def wait_until(condition, timeout=300.0):
  import time
  t0 = time.time()
  while not condition():
    assert time.time() - t0 < timeout, "timed out"
    time.sleep(0.5)


def training(workdirs):
  """Every workdir has logged a training step (its process is in the loop)."""
  return all(read_jsonl(w / "metrics.jsonl") for w in workdirs if (w / "metrics.jsonl").exists()
             ) and all((w / "metrics.jsonl").exists() for w in workdirs)


def test_sweep_sigterm_stops_its_runs_and_a_rerun_meanwhile_says_so(tmp_path):
  from metricattn import runs
  root = tmp_path / "sweep"
  workdirs = [root / f"attention={k}" / "seed=0" for k in ("softmax", "l2")]
  sweep = subprocess.Popen([*SWEEP, "--seeds", "0", "--root", str(root)], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    wait_until(lambda: training(workdirs))
    again = subprocess.run([*SWEEP, "--seeds", "0", "--root", str(root)], cwd=ROOT,
                           capture_output=True, text=True)
    assert again.returncode == 2
    assert again.stderr.startswith(f"error: 2 of the runs under {root} are still training in "
                                   "another process")
    sweep.send_signal(signal.SIGTERM)
    out, err = sweep.communicate(timeout=300)
  finally:
    sweep.kill()
  assert sweep.returncode == 143, err
  assert err.strip().splitlines()[-1].startswith("sweep stopped by SIGTERM: 2 of 2 runs ended")
  for w in workdirs:
    assert not runs.busy(w)
    assert "SIGTERM: stopped at step" in (w / "log.txt").read_text()
    assert any(p.name.isdigit() for p in (w / "checkpoints").iterdir())


def test_sigkill_to_the_sweep_stops_its_runs_after_a_checkpoint(tmp_path):
  from metricattn import runs
  root = tmp_path / "sweep"
  workdirs = [root / f"attention={k}" / "seed=0" for k in ("softmax", "l2")]
  sweep = subprocess.Popen([*SWEEP, "--seeds", "0", "--root", str(root)], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    wait_until(lambda: training(workdirs))
  finally:
    sweep.kill()
  sweep.wait()
  wait_until(lambda: not any(runs.busy(w) for w in workdirs), timeout=120)
  for w in workdirs:
    assert "SIGTERM: stopped at step" in (w / "log.txt").read_text()
    assert any(p.name.isdigit() for p in (w / "checkpoints").iterdir())
