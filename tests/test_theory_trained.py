"""Trained-IPN probe (metricattn.theory.trained): the asymmetry measure and its sanity check."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest

from metricattn import experiment
from metricattn.errors import UserError
from metricattn.theory import report
from metricattn.theory import trained as tr
from metricattn.theory import trained_report


def test_asymmetry_ignores_row_and_column_offsets():
  """Zero for a symmetric logit matrix plus row and column offsets; not zero otherwise."""
  rng = np.random.default_rng(0)
  sym = rng.normal(size=(30, 30))
  sym = sym + sym.T
  shifted = sym + rng.normal(size=(30, 1)) + rng.normal(size=(1, 30))
  assert tr.asymmetry(shifted[None]) < 1e-12
  assert tr.asymmetry(rng.normal(size=(1, 30, 30))) > 0.5
  gram = rng.normal(size=(30, 4))
  assert tr.negative_mass((gram @ gram.T)[None]) < 1e-12      # PSD: a metric kernel
  assert tr.negative_mass(-(gram @ gram.T)[None]) > 0.99


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
  """A root with the moons experiment's `test` budget (2 seeds vmapped per kind, 20 steps),
  trained by the command that the analysis names when the runs are missing."""
  root = tmp_path_factory.mktemp("trained") / "moons"
  with pytest.raises(UserError) as missing:
    trained_report.check_runs(root, "test")
  command = trained_report.experiment_command(root, "test")
  assert "6 of the 6 runs" in str(missing.value) and command in str(missing.value)
  assert experiment.main(shlex.split(command)[3:]) == 0
  runs = trained_report.check_runs(root, "test")
  assert len(runs) == 6 and all((w / "summary.json").exists() for w in runs.values())
  return root


@pytest.fixture(scope="module")
def tiny_runs(tiny_root):
  """{kind: [init, trained] analyses} of seed 1 (the second slice of the stacked checkpoint)."""
  return {k: tr.analyse_workdir(w) for (k, s), w in tr.workdirs(tiny_root, "test").items()
          if s == 1}


def test_metric_kinds_are_symmetric_and_softmax_is_not(tiny_runs):
  for kind, runs in tiny_runs.items():
    asym = [l.asym for r in runs for l in r.layers[1:]]
    if kind == "softmax":
      assert min(asym) > 0.01, asym
    else:
      assert max(asym) < 1e-5, (kind, asym)
      assert max(l.neg for r in runs for l in r.layers[1:]) < 1e-5


def test_analysed_matrix_reproduces_the_blocks(tiny_runs):
  for runs in tiny_runs.values():
    trained = runs[1]
    assert trained.state == "trained" and len(trained.layers) == 3
    assert trained.set_accuracy > 0.0 and trained.run_accuracy is not None
    for layer in trained.layers[1:]:
      assert layer.prop_err < 1e-5
      assert layer.near_one >= 1 and 0.5 <= layer.split <= 1.0
      assert 1 <= layer.clusters <= 200 and layer.rank <= 3


def test_report_of_the_experiment_runs(tiny_root, tmp_path):
  trained_report.main(["--runs", str(tiny_root), "--budget", "test", "--out", str(tmp_path)])
  text = (tmp_path / "report.md").read_text()
  assert "budget `test`" in text and "6 finished runs analysed" in text
  assert "| kind | layer | asym, init |" in text
  assert json.loads((tmp_path / "results.json").read_text())["seeds"] == [0, 1]
  assert (tmp_path / "trained.png").exists() and (tmp_path / "trained_attention.png").exists()
  with pytest.raises(UserError, match="budget 'test', not 'quick'"):
    trained_report.check_runs(tiny_root, "quick")


def test_theory_help_shows_the_trained_subcommand(capsys):
  with pytest.raises(SystemExit):
    report.parse_args(["--help"])
  assert "trained [-h] [--runs ROOT]" in capsys.readouterr().out
