"""Multi-process training on one machine: 2 processes on localhost (one CPU device each, gloo
collectives) match one process with the same global batch (Moon IPN with device-resident
data, a tiny ViT with host batches, vmapped seeds split over the processes); killing one ends
the other with a clear line and restarting both resumes to the uninterrupted result; SIGTERM
to one stops both with a checkpoint. Each test starts 2 or 3 pairs of processes."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from metricattn.errors import UserError
from metricattn.multihost import cluster_processes, initialize
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
# process calls its writer; only process 0's writes).
SIGNALLER = """
import os, signal, sys
from metricattn import writers
write = writers.MetricWriter.write
def write_then_signal(self, step, split, metrics):
  write(self, step, split, metrics)
  if step == {step} and split == "train":
    os.kill(os.getpid(), signal.{signal})
writers.MetricWriter.write = write_then_signal
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


def two_processes(args: list[str], signaller: tuple[int, str, int] | None = None
                  ) -> list[tuple[int, str, str]]:
  """Runs `metricattn.main ARGS` as processes 0 and 1 of one run; (code, stdout, stderr) of
  each. `signaller` (process, signal name, step): that process signals itself after step."""
  common = [*args, f"--coordinator_address=localhost:{free_port()}", "--num_processes=2"]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device each

  def command(i):
    if signaller and signaller[0] == i:
      return ["-c", SIGNALLER.format(signal=signaller[1], step=signaller[2])]
    return ["-m", "metricattn.main"]

  procs = [subprocess.Popen([sys.executable, *command(i), *common, f"--process_id={i}"],
                            cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
           for i in range(2)]
  try:
    outs = [p.communicate(timeout=180) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
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
  assert code1 != 0  # process 1 stopped by itself instead of waiting for process 0
  assert ("error: process 1 of 2 stopped" in err1
          or "JAX distributed service detected fatal errors" in err1), err1
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
  step with a checkpoint, and the rerun finishes as one process does."""
  path, arg, overrides = MOONS
  overrides = dict(overrides, train__steps=6, train__log_every=2, train__eval_every=6,
                   train__checkpoint_every=6)
  args = [*flags((path, arg, overrides)), "--seeds=0,1", f"--workdir={tmp_path / 'two'}"]
  stopped = two_processes(args, signaller=(1, "SIGTERM", 2))
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
])
def test_incomplete_or_bad_process_flags(args, message):
  with pytest.raises(UserError, match=message):
    initialize(*args)


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
