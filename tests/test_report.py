"""Report statistics on synthetic run directories with known answers; figures; the CLI."""

import json

import numpy as np
import pytest

from metricattn import stats
from metricattn.report import main as report_main
from metricattn.report import write_report

STEPS = [0, 10, 20, 30]


def write_run(workdir, *, seed, kind, final, losses=(4.0, 2.0, 4.0, 2.0),
              evals=((100, 0.5), (200, 0.96), (300, 0.97)), metric="accuracy", sps=100.0):
  """A finished run as the trainer writes it: config.json, metrics.jsonl, summary.json."""
  workdir.mkdir(parents=True)
  (workdir / "config.json").write_text(json.dumps({"seed": seed}))
  records = [{"step": s, "split": "train", "loss": l} for s, l in zip(STEPS, losses)]
  records += [{"step": s, "split": "test", metric: v} for s, v in evals]
  records.append({"step": 400, "split": "test", metric: final})
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  summary = {f"test/{metric}": final, "train/loss": losses[-1], "attention": kind,
             "num_params": 42, "steps_per_second": sps, "step": 400, "seeds_in_program": 1,
             "platform": "cpu", "devices": 1}
  (workdir / "summary.json").write_text(json.dumps(summary))


FINALS = {"softmax": [0.5, 0.6, 0.7], "l2": [0.8, 0.9, 1.0]}


@pytest.fixture
def root(tmp_path):
  for kind, values in FINALS.items():
    for seed, v in enumerate(values):
      write_run(tmp_path / f"attention={kind}" / f"seed={seed}", seed=seed, kind=kind, final=v)
  return tmp_path


def test_summary_statistics_of_known_runs(root):
  text = write_report(root, target=0.95)
  data = json.loads((root / "report.json").read_text())
  g = data["groups"]["attention=l2"]
  assert g["final"]["mean"] == pytest.approx(0.9) and g["final"]["std"] == pytest.approx(0.1)
  assert (g["final"]["median"], g["final"]["min"], g["final"]["max"]) == pytest.approx(
      (0.9, 0.8, 1.0))
  assert g["best_mean"] == pytest.approx(np.mean([0.97, 0.97, 1.0]))  # best of any evaluation
  assert g["steps_to_target"] == 200 and g["reached"] == 3       # first eval >= 0.95
  assert g["seconds_to_target"] == pytest.approx(2.0)             # 200 steps at 100 steps/s
  assert g["loss_jitter"] == pytest.approx(2.0)                   # |4-2| each step
  assert g["loss_auc"] == pytest.approx(3.0)                      # average height of 4,2,4,2
  assert g["num_params"] == 42
  assert "| attention=l2 | l2 | 3 | 0.9000 ± 0.1000 | 0.9000 | 0.8000 | 1.0000 |" in text
  assert "200 (3/3)" in text


def test_comparison_with_softmax(root):
  text = write_report(root)
  [c] = json.loads((root / "report.json").read_text())["comparisons"]
  assert (c["group"], c["baseline"]) == ("attention=l2", "attention=softmax")
  assert c["diff"] == pytest.approx(0.3)
  assert c["ci_low"] <= 0.3 <= c["ci_high"]
  for p in (c["welch_p"], c["mannwhitney_p"]):
    assert 0.0 <= p <= 1.0
  assert c["welch_p"] < 0.05
  assert "| attention=l2 vs attention=softmax | +0.3000 |" in text
  assert "target none" in text and "| n/a |" in text               # no target given


def test_figures_written_and_embedded(root):
  text = write_report(root)
  for name in ("curves.png", "violin.png"):
    assert (root / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({name})" in text


def test_bootstrap_interval_covers_the_true_difference():
  rng = np.random.default_rng(1)
  a, b = rng.normal(1.0, 0.1, 10), rng.normal(0.8, 0.1, 10)
  diff, lo, hi = stats.bootstrap_diff(list(a), list(b), seed=3)
  assert lo < 0.2 < hi and lo < diff < hi
  assert stats.bootstrap_diff(list(a), list(b), seed=3) == (diff, lo, hi)  # seeded
  assert stats.mannwhitney_p([1.0] * 3, [1.0] * 3) == 1.0                 # all tied
  assert stats.welch_p([1.0, 1.0], [1.0, 1.0]) == 1.0


def test_curve_measures_on_known_curves():
  steps = list(range(0, 101, 10))
  assert stats.curve_auc(steps, [1 - s / 100 for s in steps]) == pytest.approx(0.5)
  assert stats.jitter([1.0, 3.0, 2.0]) == pytest.approx(1.5)
  assert stats.curve_auc([5], [1.0]) is None and stats.jitter([1.0]) is None
  assert stats.first_reaching([1, 2, 3], [0.1, 0.5, 0.9], 0.5) == 2
  assert stats.first_reaching([1, 2], [0.1, 0.2], 0.5) is None


def test_bleu_runs_and_target_from_experiment(tmp_path, capsys):
  for kind, values in {"softmax": [20.0, 22.0], "metric": [25.0, 27.0]}.items():
    for seed, v in enumerate(values):
      write_run(tmp_path / f"attention={kind}" / f"seed={seed}", seed=seed, kind=kind,
                final=v, metric="bleu", evals=((100, 10.0), (200, 26.0)))
  (tmp_path / "experiment.json").write_text(json.dumps(
      {"name": "x", "title": "X", "budget": "test", "budget_note": "tiny", "target": 24.0,
       "command": "python -m metricattn.experiment x --budget test", "sweep": "..."}))
  assert report_main([str(tmp_path)]) == 0
  text = (tmp_path / "report.md").read_text()
  assert "headline metric `test/bleu`" in text and "budget **`test`**" in text
  assert "python -m metricattn.experiment x --budget test" in text
  assert "| attention=metric | metric | 2 | 26.00 ± 1.41 |" in text
  assert "200 (2/2)" in text                     # target 24 from experiment.json
  assert report_main([str(tmp_path), "--target", "30"]) == 0
  assert "not reached (0/2)" in (tmp_path / "report.md").read_text()
