"""Experiment definitions load; one command runs an experiment end to end and resumes."""

import dataclasses
import json

import pytest

from metricattn import experiment, registry


@pytest.mark.parametrize("name", list(registry.EXPERIMENTS))
def test_definitions_load_with_every_budget(name):
  exp = registry.get(name)
  assert {"full", "quick", "test"} <= set(exp.budgets)
  kinds = ("softmax", "l2", "metric")
  ipn = exp.config in ("configs/moons_ipn.py", "configs/ipn_mnist.py")
  assert exp.kinds == (kinds + ("l2_lipschitz", "softmax_g") if ipn
                       else kinds + ("l2_lipschitz",) if exp.robustness else kinds)
  if ipn:  # the controls of quick: a residual connection, and no propagation
    assert exp.kinds_of("residual") == kinds and exp.kinds_of("pointwise") == ("softmax",)
    for control, override in (("residual", "model.residual=True"), ("pointwise", "model.depth=0")):
      b = exp.budgets[control]
      assert b.overrides == (*exp.budgets["quick"].overrides, override)
      assert (b.args, b.seeds) == (exp.budgets["quick"].args, exp.budgets["quick"].seeds)
  assert exp.budgets["full"].seeds == 10
  assert exp.metric in ("test/accuracy", "test/bleu")
  if not (experiment.REPO / exp.config).exists():
    pytest.skip(f"{exp.config} does not exist yet")
  for budget in exp.budgets:
    config = experiment.load_config(exp, budget, "l2")   # overrides hit existing keys
    assert config.model.attention == "l2"
  if exp.config == "configs/ipn_mnist.py":  # each kind's learning rate chosen on val
    for budget in ("lr", "full"):
      assert experiment.grid_of(exp, budget, experiment.REPO, None)["grid"][1:] == [
          registry.LR_GRID]
      assert experiment.load_config(exp, budget, "l2").data.val_size > 0
    assert experiment.grid_of(exp, "quick", experiment.REPO, None)["grid"] == [
        f"attention={','.join(exp.kinds)}"]
  if "l2_lipschitz" in exp.kinds:  # the fourth robustness row: l2 with Kim et al.'s values
    config = experiment.load_config(exp, "test", "l2_lipschitz")
    assert (config.model.attention, config.model.value_map) == ("l2", "lipschitz")


def test_missing_config_is_one_clear_line(monkeypatch, tmp_path, capsys):
  moons = registry.EXPERIMENTS["moons"]
  monkeypatch.setitem(registry.EXPERIMENTS, "moons",
                      dataclasses.replace(moons, config="configs/not_written_yet.py"))
  assert experiment.main(["moons", "--budget", "test", "--root", str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip()
  assert err == "error: experiment moons needs configs/not_written_yet.py, which does not " \
                "exist yet"
  assert experiment.main(["nope"]) == 2
  assert "unknown experiment 'nope'" in capsys.readouterr().err


def test_moons_test_budget_end_to_end_and_resume(tmp_path, capsys):
  args = ["moons", "--budget", "test", "--root", str(tmp_path / "exp"), "--jobs", "2",
          "--no-robustness", "--results", str(tmp_path / "results")]
  assert experiment.main(args) == 0
  root = tmp_path / "exp"
  summaries = sorted(p.parent.relative_to(root).as_posix() for p in root.rglob("summary.json"))
  assert summaries == [f"attention={k}/seed={s}"
                       for k in ("l2", "l2_lipschitz", "metric", "softmax", "softmax_g") for s in (0, 1)]
  text = (root / "report.md").read_text()
  assert "budget **`test`**" in text and "python -m metricattn.experiment moons" in text
  assert "| attention=metric | metric | 2 |" in text and "vs attention=softmax" in text
  assert "| attention=l2_lipschitz | l2_lipschitz | 2 |" in text
  assert "| attention=softmax_g vs attention=softmax |" in text          # the control kind
  assert "## Trivial baselines" in text and "| kNN (k = 15) |" in text   # on the runs' data
  assert (tmp_path / "results" / "baselines.json").exists()
  assert (tmp_path / "results" / "report.md").read_text() == text
  assert (tmp_path / "results" / "curves.png").exists()
  # An interrupted experiment: a run without its summary and no report yet.
  (root / "attention=l2" / "seed=1" / "summary.json").unlink()
  (root / "report.md").unlink()
  capsys.readouterr()
  assert experiment.main(args) == 0
  assert "5 runs, 4 already finished, 1 to run" in capsys.readouterr().out
  assert (root / "attention=l2" / "seed=1" / "summary.json").exists()
  assert (root / "report.md").exists()
  # The same root with another budget is refused.
  assert experiment.main(["moons", "--budget", "quick", "--root", str(root)]) == 2
  assert json.loads((root / "experiment.json").read_text())["budget"] == "test"
