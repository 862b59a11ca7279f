"""Multi-process training on one machine: 2 processes on localhost (one CPU device each, gloo
collectives) match one process with the same global batch (Moon IPN with device-resident
data, a tiny ViT with host batches, vmapped seeds split over the processes); killing one ends
the other with a clear line and restarting both resumes to the uninterrupted result; SIGTERM
to one stops both with a checkpoint. Each test starts 2 or 3 pairs of processes. Failures are
one line in bounded time: a missing peer (--init_timeout), a second process 0, a killed
process 1 (JAX's coordination service notices; process 0 stops instead of aborting)."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from metricattn.errors import UserError
from metricattn.multihost import HEARTBEAT_TIMEOUT, cluster_processes, initialize
from metricattn.train import train_and_evaluate, train_seeds
from metricattn.fileio import read_jsonl
from tests.helpers import ROOT, load_config

MOONS = ("configs/moons_ipn.py", "attention=metric",
         dict(train__steps=16, train__log_every=1, train__eval_every=8,
              train__checkpoint_every=8))
VIT = ("configs/vit_image.py", "dataset=digits,attention=metric,variant=Mu/4",
       dict(train__steps=2, train__log_every=1, train__eval_every=2,
            train__checkpoint_every=2, data__augment=True))  # batches made on the host
KILL_AT = 12  # process 0 dies after logging this step; the last checkpoint is step 8

# A process that sends itself `signal` once it has logged training step `step` (every
# process calls its writer; only process 0's writes); it prints the time first. It closes
# its writers `slow_close` seconds late.
SIGNALLER = """
import os, signal, sys, time
from metricattn import writers
write = writers.MetricWriter.write
def write_then_signal(self, step, split, metrics):
  write(self, step, split, metrics)
  if step == {step} and split == "train":
    print(f"signalled at {{time.time()}}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.{signal})
writers.MetricWriter.write = write_then_signal
close = writers.MetricWriter.close
def slow_close(self):  # on its way out after the last collective, this process lags behind
  time.sleep({slow_close})
  close(self)
writers.MetricWriter.close = slow_close
sys.argv = ["main"] + sys.argv[1:]
from absl import app
from metricattn import main
app.run(main.main, flags_parser=main.parse_flags)
"""


def flags(experiment) -> list[str]:
  path, arg, overrides = experiment
  return [f"--config={path}:{arg}"] + [f"--config.{k.replace('__', '.')}={v}"
                                       for k, v in overrides.items()]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def two_processes(args: list[str], signaller: tuple[int, str, int] | None = None,
                  ended: list[float] | None = None,
                  slow_close: float = 0) -> list[tuple[int, str, str]]:
  """Runs `metricattn.main ARGS` as processes 0 and 1 of one run; (code, stdout, stderr) of
  each. `signaller` (process, signal name, step): that process signals itself after step,
  and closes its writers `slow_close` seconds late. `ended`, when given, receives the time
  (time.time()) each process ended."""
  port = free_port()

  def command(i):
    if signaller and signaller[0] == i:
      return ["-c", SIGNALLER.format(signal=signaller[1], step=signaller[2],
                                     slow_close=slow_close)]
    return ["-m", "metricattn.main"]

  procs = [start_process(args, port, i, 2, command(i)) for i in range(2)]
  return finish(procs, ended)


def start_process(args: list[str], port: int, i: int, n: int = 2,
                  command=("-m", "metricattn.main")) -> subprocess.Popen:
  """Process `i` of `n` of a run `metricattn.main ARGS` coordinated at localhost:PORT."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device each
  return subprocess.Popen([sys.executable, *command, *args,
                           f"--coordinator_address=localhost:{port}", f"--num_processes={n}",
                           f"--process_id={i}"], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(procs: list[subprocess.Popen], ended: list[float] | None = None,
           timeout: float = 180) -> list[tuple[int, str, str]]:
  """(code, stdout, stderr) of each process once all have ended; `ended` receives when."""
  outs, times = [None] * len(procs), [None] * len(procs)

  def wait(i):
    try:
      outs[i] = procs[i].communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      procs[i].kill()
      outs[i] = procs[i].communicate()
    times[i] = time.time()

  threads = [threading.Thread(target=wait, args=(i,)) for i in range(len(procs))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  if ended is not None:
    ended[:] = times
  return [(p.returncode, *out) for p, out in zip(procs, outs)]


def train_losses(workdir) -> list[float]:
  return [r["loss"] for r in read_jsonl(workdir / "metrics.jsonl") if r["split"] == "train"]


def metrics_of(workdir) -> dict:
  """summary.json without its timings."""
  summary = json.loads((workdir / "summary.json").read_text())
  return {k: v for k, v in summary.items() if "/" in k or k == "step"}


def assert_matches_one_process(experiment, workdir, tmp_path):
  path, arg, overrides = experiment
  train_and_evaluate(load_config(path, arg, **overrides), tmp_path / "one")
  one, two = train_losses(tmp_path / "one"), train_losses(workdir)
  assert len(one) == len(two) == overrides["train__steps"]
  assert abs(one[0] - two[0]) < 1e-6
  assert abs(one[-1] - two[-1]) < 1e-4
  summary = json.loads((workdir / "summary.json").read_text())
  assert (summary["devices"], summary["processes"]) == (2, 2)


def test_moons_two_processes_match_one_and_resume_after_kill(tmp_path):
  full, cut = tmp_path / "full", tmp_path / "cut"
  runs = two_processes([*flags(MOONS), f"--workdir={full}"])
  for code, _, err in runs:
    assert code == 0, err
  assert "2 device(s) in 2 processes, starting" in runs[0][1]
  assert_matches_one_process(MOONS, full, tmp_path)
  # Only process 0 writes the run's files: every record once.
  assert [r["step"] for r in read_jsonl(full / "metrics.jsonl") if r["split"] == "train"] == (
      list(range(1, 17)))

  (code0, _, _), (code1, _, err1) = two_processes([*flags(MOONS), f"--workdir={cut}"],
                                                  signaller=(0, "SIGKILL", KILL_AT))
  assert code0 == -signal.SIGKILL
  assert code1 == 1, err1  # process 1 stopped by itself instead of waiting for process 0
  assert "error: process 1 of 2 stopped" in err1, err1
  assert "Fatal Python error" not in err1, err1
  assert not (cut / "summary.json").exists()
  resumed = two_processes([*flags(MOONS), f"--workdir={cut}"])
  for code, _, err in resumed:
    assert code == 0, err
  assert "resuming at step 8" in resumed[0][1]
  assert "step" not in resumed[1][1]  # process 1 writes nothing of the run's own
  assert read_jsonl(cut / "metrics.jsonl") == read_jsonl(full / "metrics.jsonl")
  assert metrics_of(cut) == metrics_of(full)


def test_tiny_vit_two_processes_match_one(tmp_path):
  for code, _, err in two_processes([*flags(VIT), f"--workdir={tmp_path / 'two'}"]):
    assert code == 0, err
  assert_matches_one_process(VIT, tmp_path / "two", tmp_path)


def test_vmapped_seeds_split_over_processes_and_sigterm_to_one(tmp_path):
  """Each process trains its own seed; SIGTERM to process 1 stops both at the next logged
  step with a checkpoint, and the rerun finishes as one process does. Process 1 lags 3 s on
  its way out: process 0, which runs the coordination service, waits for it (leaving first,
  it made process 1 report it lost and exit 1)."""
  path, arg, overrides = MOONS
  overrides = dict(overrides, train__steps=6, train__log_every=2, train__eval_every=6,
                   train__checkpoint_every=6)
  args = [*flags((path, arg, overrides)), "--seeds=0,1", f"--workdir={tmp_path / 'two'}"]
  stopped = two_processes(args, signaller=(1, "SIGTERM", 2), slow_close=3)
  assert [code for code, _, _ in stopped] == [128 + signal.SIGTERM] * 2, stopped
  for _, _, err in stopped:
    assert "SIGTERM: stopped at step 4 of 6 with a checkpoint" in err
  runs = two_processes(args)
  for code, _, err in runs:
    assert code == 0, err
  assert "(seeds split over them) in 2 processes, resuming at step 4" in runs[0][1]
  train_seeds(load_config(path, arg, **overrides), [0, 1], tmp_path / "one")
  for seed in (0, 1):
    one = train_losses(tmp_path / "one" / f"seed={seed}")
    two = train_losses(tmp_path / "two" / f"seed={seed}")
    assert len(one) == len(two) == 3
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-6


@pytest.mark.parametrize("args,message", [
    (("localhost:1234", None, 0), "missing --num_processes"),
    (("localhost:1234", 2, 2), "--process_id must be in 0..1"),
    (("localhost:1234", 2, 0, 0), "--init_timeout must be at least 1"),
])
def test_incomplete_or_bad_process_flags(args, message):
  with pytest.raises(UserError, match=message):
    initialize(*args)


def test_a_taken_coordinator_port_is_named_before_jax_starts():
  with socket.socket() as s:
    s.bind(("", 0))
    s.listen()
    port = s.getsockname()[1]
    with pytest.raises(UserError, match=f"port {port} of --coordinator_address=localhost:"
                       f"{port} is already in use: two processes were started with "
                       "--process_id=0"):
      initialize(f"localhost:{port}", 2, 0)
  import jax
  assert not jax.distributed.is_initialized()


def error_lines(err: str) -> list[str]:
  return [line for line in err.splitlines() if line.startswith("error:")]


TINY = [*flags(MOONS), "--config.train.steps=200"]


def test_a_missing_peer_is_one_line_within_the_init_timeout(tmp_path):
  """Process 0 alone, and process 1 alone (no process 0 to reach): one line each after
  --init_timeout, exit code 2."""
  procs = [start_process([*TINY, f"--workdir={tmp_path / str(i)}", "--init_timeout=3"],
                         free_port(), i) for i in (0, 1)]
  (code0, _, err0), (code1, _, err1) = finish(procs, timeout=90)
  assert code0 == 2 and error_lines(err0) == [
      "error: process 0 of 2: not all 2 processes joined within 3 s; start the others with "
      "the same --coordinator_address, or check --num_processes/--process_id (each process "
      "its own id in 0..1), or raise --init_timeout"], err0
  assert code1 == 2 and len(error_lines(err1)) == 1, err1
  assert "error: process 1 of 2: could not reach process 0 at --coordinator_address=" in err1
  for err in (err0, err1):
    assert "Fatal" not in err and "Traceback" not in err, err


def test_a_second_process_0_is_named(tmp_path):
  """A second process started with --process_id=0 finds the coordinator's port taken."""
  port = free_port()
  first = start_process([*TINY, f"--workdir={tmp_path / 'a'}", "--init_timeout=60"], port, 0)
  try:
    deadline = time.time() + 60
    while time.time() < deadline:  # until process 0 serves the port
      try:
        socket.create_connection(("localhost", port), timeout=1).close()
        break
      except OSError:
        assert first.poll() is None, first.communicate()
        time.sleep(0.5)
    [(code, _, err)] = finish([start_process([*TINY, f"--workdir={tmp_path / 'b'}"], port, 0)],
                              timeout=60)
  finally:
    first.kill()
    first.communicate()
  assert code == 2 and error_lines(err) == [
      f"error: process 0 of 2: port {port} of --coordinator_address=localhost:{port} is "
      f"already in use: two processes were started with --process_id=0 (give each process "
      f"its own id in 0..1), or another program holds the port (choose a free one)"], err


def test_a_killed_peer_stops_the_other_in_one_line(tmp_path):
  """kill -9 of process 1 mid-run: process 0 prints one line and exits with code 1, no
  abort and no stack dump, within JAX's heartbeat timeout and a margin."""
  ended = []
  (code0, _, err0), (code1, _, err1) = two_processes(
      [*flags(MOONS), f"--workdir={tmp_path}"], signaller=(1, "SIGKILL", KILL_AT), ended=ended)
  assert code1 == -signal.SIGKILL, err1
  killed = float(err1.split("signalled at ")[1].split()[0])
  assert code0 == 1, err0
  lines = error_lines(err0)
  assert len(lines) == 1 and lines[0].startswith("error: process 0 of 2 stopped: "), err0
  assert "Fatal Python error" not in err0 and "Traceback" not in err0, err0
  assert ended[0] - killed < HEARTBEAT_TIMEOUT + 20, (ended[0] - killed, err0)


SLURM = dict(SLURM_JOB_ID="7", SLURM_STEP_NODELIST="node1", SLURM_PROCID="0", SLURM_LOCALID="0")


@pytest.mark.parametrize("tasks", [1, 2])
def test_cluster_detection(tasks, monkeypatch):
  """A SLURM step of several tasks is a cluster to join; one task (a job running a sweep's
  single runs) is not, and neither is this machine."""
  assert cluster_processes() == 1
  for k, v in dict(SLURM, SLURM_NTASKS=str(tasks)).items():
    monkeypatch.setenv(k, v)
  assert cluster_processes() == tasks
  initialize(None, 1, None)  # one process asked for, inside the job
  import jax
  assert not jax.distributed.is_initialized()


def test_a_batch_made_in_parts_equals_the_whole():
  """What each process makes of the global batch (its rows, augmentation included)."""
  import numpy as np
  from metricattn.data import get_dataset
  path, arg, overrides = VIT
  data = get_dataset(load_config(path, arg, **overrides))
  assert data.augment
  whole = data.train_batch(5)
  halves = [data.train_batch(5, slice(0, 16)), data.train_batch(5, slice(16, 32))]
  for k in whole:
    np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), whole[k])
