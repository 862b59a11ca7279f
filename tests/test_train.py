"""The trainer: a tiny end-to-end run, resume after SIGKILL, multi-device, bad input."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from metricattn.errors import UserError
from metricattn.train import TrainingDiverged, train_and_evaluate
from metricattn.fileio import read_jsonl
from tests.helpers import ROOT, cli, tiny_moons


def test_tiny_end_to_end_run(tmp_path):
  summary = train_and_evaluate(tiny_moons(train__steps=300, train__eval_every=100,
                                          train__checkpoint_every=100), tmp_path)
  assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "metrics.jsonl",
                                                   "summary.json", "checkpoints"}
  records = read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in records if r["split"] == "test"] == [100, 200, 300]
  assert [r["step"] for r in records if r["split"] == "train"] == list(range(10, 301, 10))
  first, last = records[0]["loss"], [r for r in records if r["split"] == "train"][-1]["loss"]
  assert last < first
  assert summary["test/accuracy"] > 0.75  # metric IPN on Moon learns quickly
  for key in ("train/loss", "test/loss", "steps_per_second", "compile_seconds",
              "wall_seconds", "num_params"):
    assert summary[key] is not None and summary[key] > 0
  assert json.loads((tmp_path / "config.json").read_text())["model"]["attention"] == "metric"
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [200, 300]


KILLER = """
import os, signal, sys
from metricattn import writers
from metricattn.cli import enable_compilation_cache
write = writers.MetricWriter.write
def write_then_die(self, step, split, metrics):
  write(self, step, split, metrics)
  if step >= 70:
    os.kill(os.getpid(), signal.SIGKILL)
writers.MetricWriter.write = write_then_die
sys.argv = ["main", "--config=configs/moons_ipn.py:attention=l2", "--workdir=" + sys.argv[1],
            "--config.train.steps=100", "--config.train.checkpoint_every=40",
            "--config.train.eval_every=20", "--config.train.log_every=10"]
from absl import app
from metricattn import main
app.run(main.main, flags_parser=main.parse_flags)
"""


def restore_params(workdir):
  from metricattn.checkpoint import Checkpointer
  import orbax.checkpoint as ocp
  ckpt = Checkpointer(workdir, 2)
  out = ckpt.manager.restore(ckpt.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))
  return jax.tree.leaves(out.state["params"])


def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
  args = ["metricattn.main", "--config=configs/moons_ipn.py:attention=l2",
          "--config.train.steps=100", "--config.train.checkpoint_every=40",
          "--config.train.eval_every=20", "--config.train.log_every=10"]
  full = cli(*args, f"--workdir={tmp_path / 'full'}")
  assert full.returncode == 0, full.stderr
  killed = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path / "cut")], cwd=ROOT,
                          capture_output=True, text=True)
  assert killed.returncode == -signal.SIGKILL
  cut = tmp_path / "cut"
  assert max(r["step"] for r in read_jsonl(cut / "metrics.jsonl")) == 70  # past checkpoint 40
  assert not (cut / "summary.json").exists()
  resumed = cli(*args, f"--workdir={cut}")
  assert resumed.returncode == 0, resumed.stderr
  assert "resuming at step 40" in resumed.stdout
  assert read_jsonl(cut / "metrics.jsonl") == read_jsonl(tmp_path / "full" / "metrics.jsonl")
  for a, b in zip(restore_params(tmp_path / "full"), restore_params(cut)):
    np.testing.assert_array_equal(a, b)
  s_full, s_cut = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("full", "cut"))
  assert s_full["test/accuracy"] == s_cut["test/accuracy"]
  assert s_full["train/loss"] == s_cut["train/loss"]


def test_eight_cpu_devices_match_one(tmp_path):
  """Data-parallel over 8 simulated devices: first-step loss within 1e-6, final within 1e-4."""
  args = ["metricattn.main", "--config=configs/moons_ipn.py:attention=metric",
          "--config.train.steps=200", "--config.train.log_every=1", "--config.data.batch_size=96"]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  runs = {}
  for name, e in (("one", None), ("eight", env)):
    out = cli(*args, f"--workdir={tmp_path / name}", env=e)
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / name / "summary.json").read_text())
    assert summary["devices"] == (8 if e else 1)
    runs[name] = [r["loss"] for r in read_jsonl(tmp_path / name / "metrics.jsonl")
                  if r["split"] == "train"]
  assert abs(runs["one"][0] - runs["eight"][0]) < 1e-6
  assert abs(runs["one"][-1] - runs["eight"][-1]) < 1e-4


def test_nan_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  from metricattn.data.moons import MoonsData
  good = MoonsData.train_batch

  def poisoned(self, step):
    batch = good(self, step)
    if step == 25:
      batch["x"] = batch["x"] * np.nan
    return batch

  monkeypatch.setattr(MoonsData, "train_batch", poisoned)
  monkeypatch.setattr(MoonsData, "resident_arrays", lambda self: None)  # batches from the host
  with pytest.raises(TrainingDiverged, match=r"NaN/inf at step 26 .* \(step 20\) is kept"):
    train_and_evaluate(tiny_moons(), tmp_path)
  assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["20"]


def corrupt(workdir, step):
  """Overwrites every file of checkpoint `step` with garbage; returns {relative path: bytes}."""
  home = workdir / "checkpoints" / str(step)
  files = {p.relative_to(home): b"garbage %d" % i
           for i, p in enumerate(sorted(home.rglob("*"))) if p.is_file()}
  assert files
  for rel, data in files.items():
    (home / rel).write_bytes(data)
  return files


def test_corrupt_checkpoint_is_reported_and_kept(tmp_path, capsys):
  assert tiny_moons().train.keep_checkpoints == 2  # checkpoints 20 and 40 are kept
  train_and_evaluate(tiny_moons(), tmp_path)
  files = corrupt(tmp_path, 40)  # the newest
  capsys.readouterr()
  summary = train_and_evaluate(tiny_moons(train__steps=60), tmp_path)
  assert summary["step"] == 60
  out = capsys.readouterr()
  warnings = [l for l in out.err.splitlines() if "warning" in l]
  assert len(warnings) == 1, out.err
  assert str(tmp_path / "checkpoints" / "40") in warnings[0]
  assert "resuming from step 20" in warnings[0]
  assert "resuming at step 20" in out.out
  aside = tmp_path / "corrupt_checkpoints" / "40"
  assert {p.relative_to(aside): p.read_bytes() for p in aside.rglob("*") if p.is_file()} == files
  assert max(r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")) == 60


@pytest.mark.parametrize("damage", ["garbage", "truncated data file"])
def test_corrupt_checkpoint_on_the_command_line_has_no_traceback(tmp_path, damage):
  train_and_evaluate(tiny_moons(), tmp_path)
  if damage == "garbage":
    files = corrupt(tmp_path, 40)
  else:  # the case where orbax's reader threads print tracebacks
    data = next(p for p in sorted((tmp_path / "checkpoints" / "40" / "state" / "d").iterdir()))
    data.write_bytes(data.read_bytes()[:10])
    files = {p.relative_to(tmp_path / "checkpoints" / "40"): p.read_bytes()
             for p in (tmp_path / "checkpoints" / "40").rglob("*") if p.is_file()}
  out = cli("metricattn.main", "--config=configs/moons_ipn.py", f"--workdir={tmp_path}",
            "--config.train.steps=60", "--config.train.log_every=10",
            "--config.train.eval_every=20", "--config.train.checkpoint_every=20")
  assert out.returncode == 0, out.stderr
  assert "Traceback" not in out.stderr + out.stdout
  [warning] = [l for l in out.stderr.splitlines() if "warning" in l]
  assert "checkpoints/40" in warning and "resuming from step 20" in warning
  aside = tmp_path / "corrupt_checkpoints" / "40"
  assert {p.relative_to(aside): p.read_bytes() for p in aside.rglob("*") if p.is_file()} == files
  assert json.loads((tmp_path / "summary.json").read_text())["step"] == 60


def test_every_checkpoint_corrupt_is_an_error_and_deletes_nothing(tmp_path, capsys):
  train_and_evaluate(tiny_moons(), tmp_path)
  files = {step: corrupt(tmp_path, step) for step in (20, 40)}
  capsys.readouterr()
  with pytest.raises(UserError, match="could not be read.*nothing was deleted"):
    train_and_evaluate(tiny_moons(train__steps=60), tmp_path)
  for step, kept in files.items():
    home = tmp_path / "checkpoints" / str(step)
    assert {rel: (home / rel).read_bytes() for rel in kept if (home / rel).exists()} == kept, (
        f"checkpoint {step} did not stay in {home}")
  assert "resuming from step" not in capsys.readouterr().err  # no checkpoint is readable


def test_checkpoint_from_another_model_shape(tmp_path):
  train_and_evaluate(tiny_moons(), tmp_path)
  # The changed setting is refused first; forced, the checkpoint's shape still cannot fit.
  with pytest.raises(UserError, match="model.width: 16 -> 8"):
    train_and_evaluate(tiny_moons(train__steps=60, model__width=8), tmp_path)
  with pytest.raises(UserError, match="another shape"):
    train_and_evaluate(tiny_moons(train__steps=60, model__width=8), tmp_path,
                       allow_config_change=True)
  assert json.loads((tmp_path / "config.json").read_text())["model"]["width"] == 16


def test_rerunning_a_finished_run_changes_nothing(tmp_path):
  first = train_and_evaluate(tiny_moons(), tmp_path)
  again = train_and_evaluate(tiny_moons(), tmp_path)
  assert again["test/accuracy"] == first["test/accuracy"]
  assert again["train/loss"] == first["train/loss"]


@pytest.mark.parametrize("args, message", [
    (["--config=configs/moons_ipn.py:attention=dot"],
     "unknown attention kind 'dot'; allowed: softmax, l2, metric"),
    (["--config=configs/moons_ipn.py:atention=l2"], "unknown config argument 'atention'"),
    (["--config=configs/moons_ipn.py", "--config.train.stesp=3"],
     "unknown config key 'train.stesp'; did you mean: train.steps"),
    (["--config=configs/moons_ipn.py", "--config.train.steps=0"],
     "train.steps must be a positive integer"),
    (["--config=configs/moons_ipn.py", "--config.train.steps=-5"],
     "train.steps must be a positive integer"),
    (["--config=configs/moons_ipn.py", "--config.model.num_heads=3"],
     "does not divide into 3 heads"),
    (["--config=configs/missing.py"], "No such file"),
    (["--config=configs/moons_ipn.py", "--config.data.batch_size=0"],
     "data.batch_size must be a positive integer"),
    (["--config=configs/moons_ipn.py", "--config.data.batch_size=-4"],
     "data.batch_size must be a positive integer"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
  out = cli("metricattn.main", *args, f"--workdir={tmp_path}")
  assert out.returncode == 2
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr
  assert "Traceback" not in out.stdout + out.stderr


def test_device_resident_data_equals_host_batches(tmp_path, monkeypatch):
  """Training arrays kept on the device (indices sent per step) train like host batches."""
  from metricattn.data.moons import MoonsData
  resident = train_and_evaluate(tiny_moons(), tmp_path / "resident")
  monkeypatch.setattr(MoonsData, "resident_arrays", lambda self: None)
  host = train_and_evaluate(tiny_moons(), tmp_path / "host")
  losses = lambda d: [r["loss"] for r in read_jsonl(d / "metrics.jsonl") if r["split"] == "train"]
  np.testing.assert_allclose(losses(tmp_path / "resident"), losses(tmp_path / "host"),
                             rtol=1e-5)
  assert resident["test/accuracy"] == host["test/accuracy"]
