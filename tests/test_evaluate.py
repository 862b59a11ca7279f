"""Evaluating a checkpoint in a fresh process; `--step best` is chosen on val, never test."""

import json

from metricattn import evaluate
from metricattn.runs import best_val_step
from metricattn.train import train_and_evaluate
from metricattn.fileio import read_jsonl
from tests.helpers import cli, tiny_moons


def test_best_val_step_ignores_test():
  records = [{"step": 10, "split": "test", "accuracy": 0.99},
             {"step": 10, "split": "val", "accuracy": 0.7},
             {"step": 20, "split": "val", "accuracy": 0.8},
             {"step": 20, "split": "test", "accuracy": 0.5},
             {"step": 30, "split": "val", "accuracy": 0.8},  # a tie: the later step
             {"step": 30, "split": "train", "loss": 0.1}]
  assert best_val_step(records) == 30
  assert best_val_step(records, steps=[10, 20]) == 20
  assert best_val_step([{"step": 5, "split": "val", "loss": 2.0},
                        {"step": 6, "split": "val", "loss": 1.0}]) == 6
  assert best_val_step([r for r in records if r["split"] != "val"]) is None


def test_evaluate_from_checkpoint_in_a_fresh_process_reproduces_the_run(tmp_path, capsys):
  summary = train_and_evaluate(tiny_moons(), tmp_path)
  out = cli("metricattn.evaluate", f"--workdir={tmp_path}")
  assert out.returncode == 0, out.stderr
  result = json.loads((tmp_path / "evaluation.json").read_text())
  assert result["step"] == 40
  assert result["test/accuracy"] == summary["test/accuracy"]
  assert result["test/loss"] == summary["test/loss"]
  missing = cli("metricattn.evaluate", f"--workdir={tmp_path}", "--step=7")
  assert missing.returncode == 2 and "no checkpoint at step 7" in missing.stderr
  # Moon data has train and test only: no split to choose the best checkpoint on.
  assert evaluate.main([f"--workdir={tmp_path}", "--step=best"]) == 2
  [line] = capsys.readouterr().err.strip().splitlines()
  assert line.startswith("error: ") and "no val split to select a checkpoint on" in line
  # With val evaluations, best is the best on val (step 20), though test is best at 40.
  records = read_jsonl(tmp_path / "metrics.jsonl")
  val = [{"step": 20, "split": "val", "accuracy": 0.9}, {"step": 40, "split": "val",
                                                         "accuracy": 0.5}]
  test = [{"step": s, "split": "test", "accuracy": a} for s, a in ((20, 0.1), (40, 1.0))]
  (tmp_path / "metrics.jsonl").write_text("".join(
      json.dumps(r) + "\n" for r in records + val + test))
  assert evaluate.main([f"--workdir={tmp_path}", "--step=best"]) == 0
  assert json.loads((tmp_path / "evaluation.json").read_text())["step"] == 20
