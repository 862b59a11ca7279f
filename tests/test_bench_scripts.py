"""The speed benchmarks run and report what they claim (tiny shapes; no timing asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--batch=2", "--src-len=6", "--tgt-len=5", "--d-model=16", "--heads=2", "--layers=1",
        "--ffn=32", "--src-vocab=20", "--tgt-vocab=20", "--steps=2", "--warmup=1"]


def run(*args, **kw):
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"), **kw)


def test_bench_transformer_measures_our_step_with_the_references_fields():
  done = run("scripts/bench_transformer.py", *TINY, "--attention=l2")
  assert done.returncode == 0, done.stderr
  row = json.loads(done.stdout.strip().splitlines()[-1])
  assert row["impl"] == "metricattn" and row["attention"] == "l2" and row["batch"] == 2
  for field in ("median_ms", "min_ms", "max_ms", "tokens_per_s", "peak_rss_mb", "params",
                "cpu_per_wall", "first_loss", "last_loss", "gflop_per_step", "gflops"):
    assert row[field] > 0, field
  assert row["min_ms"] <= row["median_ms"] <= row["max_ms"]


def test_bench_transformer_alternates_with_the_reference(tmp_path):
  """--rounds runs the reference's command, then ours, and prints the ratio of medians; the
  reference here is a stand-in that answers like the real script."""
  fake = tmp_path / "python"
  fake.write_text("#!/bin/sh\necho '{\"median_ms\": 1000.0, \"cpu_per_wall\": 1.9}'\n")
  fake.chmod(0o755)
  ref_dir = tmp_path / "export" / "models" / "model"
  ref_dir.mkdir(parents=True)
  (ref_dir / "transformer.py").write_text("")
  done = run("scripts/bench_transformer.py", *TINY, "--rounds=2", f"--reference-python={fake}",
             f"--reference-dir={tmp_path / 'export'}")
  assert done.returncode == 0, done.stderr
  rounds = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"round"')]
  assert [r["round"] for r in rounds] == [0, 1]
  ratios = sorted(1000.0 / r["ours"]["median_ms"] for r in rounds)
  assert f"median reference/ours over 2 rounds: {sum(ratios) / 2:.3f}" in done.stdout


def test_bench_transformer_side_by_side_needs_the_reference():
  done = run("scripts/bench_transformer.py", "--shape=b", "--rounds=1")
  assert done.returncode != 0
  assert "--rounds needs --reference-python" in done.stderr


def test_bench_attention_against_jax_prints_both_masks():
  done = run("scripts/bench_attention.py", "--vs-jax=32", "--reps=1", "--heads=2",
             "--head-dim=8")
  assert done.returncode == 0, done.stderr
  rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
  assert [r["mask"] for r in rows] == ["none", "causal"]
  for r in rows:
    assert float(r["dot/jax"]) > 0 and float(r["l2/jax GB"]) > 0


def test_bench_mesh_step_times_vmapped_and_unrolled_seeds():
  done = run("scripts/bench_mesh_step.py", "--kinds=l2", "--seeds=2", "--steps=2", "--rounds=1",
             "--set", "data.num_train=4", "data.num_test=2")
  assert done.returncode == 0, done.stderr
  lines = done.stdout.splitlines()
  assert lines[0].startswith("l2, 2 seeds, load before")
  assert [line.split()[0] for line in lines[1:3]] == ["vmap", "unroll"]
  assert float(lines[3].split()[-1]) > 0
