"""Report statistics on synthetic run directories with known answers; figures; the CLI."""

import json

import numpy as np
import pytest

from metricattn import plots, stats
from metricattn.report import main as report_main
from metricattn.comparison import write_report

STEPS = [0, 10, 20, 30]


def write_run(workdir, *, seed, kind, final, losses=(4.0, 2.0, 4.0, 2.0),
              evals=((100, 0.5), (200, 0.96), (300, 0.97)), metric="accuracy", sps=100.0,
              val=()):
  """A finished run as the trainer writes it: config.json, metrics.jsonl, summary.json;
  `val` are (step, value) evaluations on a val split (none by default, like Moon runs)."""
  workdir.mkdir(parents=True)
  (workdir / "config.json").write_text(json.dumps({"seed": seed}))
  records = [{"step": s, "split": "train", "loss": l} for s, l in zip(STEPS, losses)]
  records += [{"step": s, "split": "test", metric: v} for s, v in evals]
  records += [{"step": s, "split": "val", metric: v} for s, v in val]
  records.append({"step": 400, "split": "test", metric: final})
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  summary = {f"test/{metric}": final, "train/loss": losses[-1], "attention": kind,
             "num_params": 42, "steps_per_second": sps, "step": 400, "seeds_in_program": 1,
             "platform": "cpu", "devices": 1, **({f"val/{metric}": val[-1][1]} if val else {})}
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
  assert g["best_mean"] is None                   # no val split: no best chosen on test
  assert g["steps_to_target"] == 200 and g["reached"] == 3       # first eval >= 0.95
  assert g["seconds_to_target"] == pytest.approx(2.0)             # 200 steps at 100 steps/s
  assert g["loss_jitter"] == pytest.approx(2.0)                   # |4-2| each step
  assert g["loss_auc"] == pytest.approx(3.0)                      # average height of 4,2,4,2
  assert g["num_params"] == 42
  assert "| attention=l2 | l2 | 3 | 0.9000 ± 0.1000 | 0.9000 | 0.8000 | 1.0000 |" in text
  assert "200 (3/3)" in text
  assert "best val eval" not in text and "no `val` split to choose an evaluation on" in text


def test_best_eval_is_chosen_on_val(tmp_path):
  """The best evaluation is the one with the best val score, not the best test score."""
  for kind, final in (("softmax", 0.9), ("l2", 0.95)):
    for seed in range(2):
      write_run(tmp_path / f"attention={kind}" / f"seed={seed}", seed=seed, kind=kind,
                final=final, val=((100, 0.6), (200, 0.9), (300, 0.8)))
  text = write_report(tmp_path)
  g = json.loads((tmp_path / "report.json").read_text())["groups"]["attention=l2"]
  assert g["best_mean"] == pytest.approx(0.96)   # test at step 200 (best val), not 0.97
  assert "test/accuracy at best val eval (mean)" in text and "| 0.9600 |" in text


def test_setting_is_chosen_per_kind_on_val_and_the_choices_compared(tmp_path):
  """A grid over the learning rate: each kind's rate is the one with the best mean final val
  score (whatever test says), and the kinds are compared at their chosen rates."""
  val_final = {("softmax", "1e-3"): 0.7, ("softmax", "1e-2"): 0.9,
               ("l2", "1e-3"): 0.8, ("l2", "1e-2"): 0.6}
  test_final = {("softmax", "1e-3"): 0.99, ("softmax", "1e-2"): 0.5,
                ("l2", "1e-3"): 0.7, ("l2", "1e-2"): 0.99}
  for (kind, lr), v in val_final.items():
    for seed in range(3):
      write_run(tmp_path / f"attention={kind}" / f"optimizer.lr={lr}" / f"seed={seed}",
                seed=seed, kind=kind, final=test_final[kind, lr] + 0.01 * seed,
                val=((100, 0.1), (400, v)))
  text = write_report(tmp_path)
  data = json.loads((tmp_path / "report.json").read_text())
  assert data["chosen"] == {"l2": "attention=l2/optimizer.lr=1e-3",
                            "softmax": "attention=softmax/optimizer.lr=1e-2"}
  [c] = data["chosen_comparisons"]
  assert (c["group"], c["baseline"]) == ("attention=l2/optimizer.lr=1e-3",
                                         "attention=softmax/optimizer.lr=1e-2")
  assert c["diff"] == pytest.approx(0.7 - 0.5)
  assert "## Chosen per kind on val" in text
  assert "| softmax | attention=softmax/optimizer.lr=1e-2 (edge of the grid) | 0.9000 (of 0.7000, 0.9000)" in text
  # the per-rate comparisons are still there, each rate's l2 against its softmax
  assert {(c["group"], c["baseline"]) for c in data["comparisons"]} == {
      ("attention=l2/optimizer.lr=1e-3", "attention=softmax/optimizer.lr=1e-3"),
      ("attention=l2/optimizer.lr=1e-2", "attention=softmax/optimizer.lr=1e-2")}


def test_no_choice_without_a_grid_or_without_val(root):
  write_report(root)
  assert "chosen" not in json.loads((root / "report.json").read_text())


def test_comparison_with_softmax(root):
  text = write_report(root)
  [c] = json.loads((root / "report.json").read_text())["comparisons"]
  assert (c["group"], c["baseline"]) == ("attention=l2", "attention=softmax")
  assert c["diff"] == pytest.approx(0.3)
  assert c["ci_low"] is None is c["ci_high"]      # 3 seeds: too few for a bootstrap
  for p in (c["welch_p"], c["mannwhitney_p"], c["brown_forsythe_p"]):
    assert 0.0 <= p <= 1.0
  assert c["welch_p"] < 0.05
  assert c["pairs"] == 3 and c["paired_t_p"] == 0.0   # the same +0.3 on every seed
  assert "| attention=l2 vs attention=softmax | +0.3000 | n/a |" in text
  assert "fewer than 5 seeds" in text
  g = json.loads((root / "report.json").read_text())["groups"]["attention=l2"]
  assert g["late_gain"] == pytest.approx(0.9 - 0.97)   # final minus the eval at step 300
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


def test_paired_and_spread_tests():
  """Paired tests match runs by seed; Brown-Forsythe tests spread; the bootstrap needs 5."""
  a = {0: 0.90, 1: 0.70, 2: 0.95, 3: 0.60, 4: 0.85, 5: 0.75}
  b = {s: v - 0.05 - 0.001 * s for s, v in a.items()}            # a bit worse on every seed
  p = stats.paired(a, b)
  assert p["pairs"] == 6 and p["paired_diff"] == pytest.approx(0.0525)
  assert p["paired_t_p"] < 1e-4 and p["wilcoxon_p"] < 0.05       # the pairing sees it ...
  assert stats.welch_p(list(a.values()), list(b.values())) > 0.3  # ... unpaired tests do not
  assert stats.paired({0: 1.0, 1: 2.0}, {1: 2.0, 2: 5.0}) == {
      "pairs": 1, "paired_diff": 0.0, "paired_t_p": None, "wilcoxon_p": None}
  wide, narrow = [0.5, 0.9, 0.6, 1.0, 0.55, 0.95], [0.74, 0.76, 0.75, 0.75, 0.76, 0.74]
  assert stats.brown_forsythe_p(wide, narrow) < 0.01
  assert stats.brown_forsythe_p([0.8] * 3, [0.8] * 4) == 1.0
  c = stats.compare(wide[:5], narrow[:5])
  assert c["ci_low"] < c["diff"] < c["ci_high"] and "pairs" not in c
  assert stats.compare(wide[:4], narrow[:5])["ci_low"] is None
  assert stats.late_gain([100, 200, 300, 400], [0.5, 0.8, 0.9, 0.91]) == pytest.approx(0.01)
  assert stats.late_gain([400], [0.9]) is None


def test_nearly_equal_groups_warn_nothing():
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    stats.compare([0.9, 0.9 + 1e-9, 0.9], [0.9, 0.9, 0.9 - 1e-9, 0.9, 0.9],
                  seeds_a=[0, 1, 2], seeds_b=[0, 1, 2, 3, 4])


def test_groups_equal_up_to_rounding_have_no_difference():
  assert np.std([0.8] * 3) > 0                                    # rounding-level spread
  assert stats.welch_p([0.8] * 3, [0.8] * 5) == 1.0
  assert stats.mannwhitney_p([0.1 + 0.2] * 3, [0.3] * 3) == 1.0
  assert stats.bootstrap_diff([0.8] * 3, [0.8] * 5) == (0.0, 0.0, 0.0)
  assert stats.bootstrap_diff([0.9] * 3, [0.8] * 3)[0] == pytest.approx(0.1)
  assert stats.welch_p([0.9] * 3, [0.8] * 3) == 0.0               # constant and different
  assert stats.mannwhitney_p([0.3, 0.1 + 0.2, 0.5], [0.3, 0.3, 0.5]) == 1.0
  assert stats.welch_p([0.8, 0.9, 1.0], [0.5, 0.6, 0.7]) < 0.05   # real spread still tested
  assert stats.summarize([0.8] * 3)["std"] == 0.0
  assert stats.summarize([0.8])["std"] is None


def test_one_seed_per_group_prints_no_spread_and_no_tests(tmp_path):
  for kind, final in (("softmax", 0.6), ("l2", 0.9)):
    write_run(tmp_path / f"attention={kind}" / "seed=0", seed=0, kind=kind, final=final)
  text = write_report(tmp_path)
  assert "| attention=l2 | l2 | 1 | 0.9000 (n = 1, no spread) |" in text
  assert "± 0.0000" not in text and "Welch" not in text and "bootstrap interval" not in text
  assert "Not compared: attention=l2 vs attention=softmax; comparisons need >= 2 seeds " \
         "per group." in text
  data = json.loads((tmp_path / "report.json").read_text())
  assert data["comparisons"] == [] and data["groups"]["attention=l2"]["final"]["std"] is None
  assert "have a line and no band" in text


def test_single_point_curves_are_drawn_with_markers():
  curves = {"softmax": {"loss": [([0, 10], [2.0, 1.0])], "metric": [([40], [0.9])]},
            "l2": {"loss": [([0, 10], [2.0, 1.5])] * 2, "metric": [([40], [0.8])] * 2}}
  fig = plots.curves_figure(curves, [("loss", "training loss"), ("metric", "accuracy")])
  loss_ax, metric_ax = fig.axes
  lines = metric_ax.get_lines()
  assert len(lines) == 2 and all(len(l.get_xdata()) == 1 for l in lines)
  assert all(l.get_marker() == "o" for l in lines)
  assert [t.get_text() for t in metric_ax.get_legend().get_texts()] == [
      "softmax (n = 1, no spread)", "l2 (n=2)"]
  assert metric_ax.get_legend().get_title().get_text() == plots.BAND
  long = {"a": {"loss": [(list(range(50)), [1.0] * 50)]}}
  [line] = plots.curves_figure(long, [("loss", "loss")]).axes[0].get_lines()
  assert line.get_marker() in (None, "None", "")                 # many points: a plain line


def test_robustness_figure_says_what_the_band_is():
  results = {"softmax": {"noise": [(0.0, [0.9, 0.8]), (0.1, [0.7, 0.6])]}}
  fig = plots.strengths_figure(results, [("noise", "sigma")])
  assert fig.axes[0].get_legend().get_title().get_text() == "band: min..max over seeds"


def test_figures_are_titled_with_the_experiment_and_metric(root, monkeypatch):
  titles = []
  save = plots.save
  monkeypatch.setattr(plots, "save", lambda fig, path, title="": (titles.append(
      title or fig.axes[0].get_title()), save(fig, path, title))[1])
  write_report(root)
  assert titles == [f"{root.name}: test/accuracy"] * 2
  (root / "experiment.json").write_text(json.dumps(
      {"name": "x", "title": "Moon, IPN", "budget": "test", "command": "c"}))
  titles.clear()
  write_report(root)
  assert titles == ["Moon, IPN: test/accuracy"] * 2


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


def test_groups_sort_by_value_not_text():
  from metricattn.comparison import group_order
  groups = ["optimizer.lr=1e-3/attention=l2", "optimizer.lr=3e-3/attention=l2",
            "optimizer.lr=3e-4/attention=l2", "optimizer.lr=3e-4/attention=metric"]
  assert sorted(groups, key=group_order) == [
      "optimizer.lr=3e-4/attention=l2", "optimizer.lr=3e-4/attention=metric",
      "optimizer.lr=1e-3/attention=l2", "optimizer.lr=3e-3/attention=l2"]


def test_many_groups_put_the_legend_below_and_one_seed_has_no_band_title():
  from metricattn import plots
  curve = ([0, 10, 20], [1.0, 0.5, 0.2])
  many = {f"g{i}": {"loss": [curve]} for i in range(6)}
  fig = plots.curves_figure(many, [("loss", "training loss")])
  legend = fig.axes[0].get_legend()
  assert legend.get_title().get_text() == ""            # n = 1 everywhere: no band
  assert legend._loc == 9 and tuple(legend.get_bbox_to_anchor().bounds)[1] < 0  # below
  few = {f"g{i}": {"loss": [curve, curve]} for i in range(3)}
  legend = plots.curves_figure(few, [("loss", "training loss")]).axes[0].get_legend()
  assert legend.get_title().get_text() == plots.BAND
