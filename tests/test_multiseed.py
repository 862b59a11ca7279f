"""Seeds vmapped in one program equal separate runs; the CLI and the sweep drive it."""

import json

import numpy as np
import pytest

from metricattn.sweep import main as sweep_main
from metricattn.train import train_and_evaluate, train_seeds
from metricattn.fileio import read_jsonl
from tests.helpers import cli, load_config, tiny_moons


def train_losses(workdir):
  return [r["loss"] for r in read_jsonl(workdir / "metrics.jsonl") if r["split"] == "train"]


def test_vmapped_seeds_equal_separate_runs(tmp_path):
  config = tiny_moons(train__steps=100, train__eval_every=50, train__checkpoint_every=50)
  stacked = train_seeds(config, [0, 1, 2], tmp_path / "vmapped")
  for seed, s in zip([0, 1, 2], stacked):
    config.seed = seed
    single = train_and_evaluate(config, tmp_path / f"single{seed}")
    assert s["seeds_in_program"] == 3 and single["seeds_in_program"] == 1
    np.testing.assert_allclose(train_losses(tmp_path / "vmapped" / f"seed={seed}"),
                               train_losses(tmp_path / f"single{seed}"), rtol=1e-4, atol=1e-5)
    assert abs(s["test/accuracy"] - single["test/accuracy"]) <= 0.011  # at most 1 of 100 points
    assert s["num_params"] == single["num_params"]
  # the seeds really differ (own data, init and batch order)
  assert len({round(s["train/loss"], 6) for s in stacked}) == 3


def test_unrolled_seeds_equal_separate_runs(tmp_path):
  """`train.stacked_seeds="unroll"` (the mesh IPN's): one unbatched copy of the step per seed
  in one program computes what separate runs compute (bitwise here; the test allows 1e-6)."""
  config = load_config("configs/mesh_seg.py", "attention=metric,steps=4",
                       data__num_train=4, data__num_test=2, train__log_every=1,
                       train__eval_every=4, train__checkpoint_every=4)
  assert config.train.stacked_seeds == "unroll"
  stacked = train_seeds(config, [0, 1], tmp_path / "unrolled")
  for seed, s in zip([0, 1], stacked):
    config.seed = seed
    single = train_and_evaluate(config, tmp_path / f"single{seed}")
    np.testing.assert_allclose(train_losses(tmp_path / "unrolled" / f"seed={seed}"),
                               train_losses(tmp_path / f"single{seed}"), rtol=1e-6, atol=0)
    assert s["test/accuracy"] == pytest.approx(single["test/accuracy"], abs=1e-9)
    assert s["seeds_in_program"] == 2
  assert stacked[0]["train/loss"] != stacked[1]["train/loss"]


def test_vmapped_seeds_resume_and_sweep_skip(tmp_path):
  args = ["metricattn.main", "--config=configs/moons_ipn.py:attention=l2", "--seeds=0:2",
          "--config.train.eval_every=20", "--config.train.checkpoint_every=20"]
  first = cli(*args, "--config.train.steps=20", f"--workdir={tmp_path / 'attention=l2'}")
  assert first.returncode == 0, first.stderr
  more = cli(*args, "--config.train.steps=40", f"--workdir={tmp_path / 'attention=l2'}")
  assert more.returncode == 0, more.stderr
  assert "resuming at step 20" in more.stdout
  for seed in (0, 1):
    summary = json.loads((tmp_path / "attention=l2" / f"seed={seed}" / "summary.json").read_text())
    assert summary["step"] == 40
  out = sweep_main(["--config=configs/moons_ipn.py", "--grid", "attention=l2", "--seeds", "0:2",
                    "--root", str(tmp_path), "--vmap-seeds", "--set", "train.steps=40"])
  assert out == 0
  assert not (tmp_path / "log.txt").exists() and not (tmp_path / "attention=l2" / "log.txt").exists()


def test_seeds_split_over_two_cpu_devices_equal_separate_runs(tmp_path):
  args = ["metricattn.main", "--config=configs/moons_ipn.py:attention=metric",
          "--config.train.steps=60", "--config.train.log_every=10",
          "--config.train.eval_every=30", "--config.train.checkpoint_every=30"]
  out = cli(*args, "--seeds=0,1", "--cpu_devices=2", f"--workdir={tmp_path / 'split'}")
  assert out.returncode == 0, out.stderr
  assert "2 device(s) (seeds split over them)" in out.stdout
  for seed in (0, 1):
    single = cli(*args, f"--config.seed={seed}", "--cpu_devices=1",
                 f"--workdir={tmp_path / f'single{seed}'}")
    assert single.returncode == 0, single.stderr
    split = tmp_path / "split" / f"seed={seed}"
    assert json.loads((split / "summary.json").read_text())["devices"] == 2
    np.testing.assert_allclose(train_losses(split), train_losses(tmp_path / f"single{seed}"),
                               rtol=1e-4, atol=1e-5)
