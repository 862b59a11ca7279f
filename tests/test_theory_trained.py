"""Trained-IPN probe (metricattn.theory.trained): the asymmetry measure and its sanity check."""

from __future__ import annotations

import numpy as np
import pytest

from metricattn.theory import trained as tr
from tests.helpers import tiny_moons


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
def tiny_runs(tmp_path_factory):
  """{kind: [init, trained] analyses} of an IPN per kind trained for 10 steps."""
  root = tmp_path_factory.mktemp("trained")
  out = {}
  for kind in tr.KINDS:
    config = tiny_moons(model__attention=kind, train__steps=10, train__log_every=10,
                        train__eval_every=10, train__checkpoint_every=10)
    summary, new = tr.train_run(config, root / kind)
    assert new and summary["step"] == 10
    assert not tr.train_run(config, root / kind)[1]               # finished: reused
    out[kind] = tr.analyse_workdir(root / kind)
  return out


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
