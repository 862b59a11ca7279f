"""Robustness evaluator on tiny trained runs: clean accuracy, monotone in eps, PGD >= FGSM."""

import json

import numpy as np
import pytest

from metricattn import attacks, robustness, robustness_eval
from metricattn.errors import UserError
from metricattn.train import train_and_evaluate, train_seeds
from tests.helpers import load_config, tiny_moons

SETTINGS = robustness_eval.Settings(sigmas=(0.0, 0.2, 0.5), epsilons=(0.0, 0.1, 0.3, 0.6),
                               pgd_steps=5)


def accuracies(result, attack):
  return np.asarray([acc for _, acc in result[attack]])


def test_single_run_clean_monotone_and_pgd_stronger(tmp_path):
  config = tiny_moons(train__steps=200, train__eval_every=100, train__checkpoint_every=100)
  summary = train_and_evaluate(config, tmp_path / "run")
  r = robustness_eval.evaluate_run(tmp_path / "run", SETTINGS)
  assert r["step"] == 200 and r["examples"] == 100
  assert r["clean_accuracy"] == pytest.approx(summary["test/accuracy"])
  for attack in robustness_eval.ATTACKS:
    assert accuracies(r, attack)[0] == pytest.approx(r["clean_accuracy"])  # strength 0
  for attack in ("fgsm", "pgd"):
    assert np.all(np.diff(accuracies(r, attack)) <= 0), r[attack]          # eps grows
  assert accuracies(r, "pgd").mean() <= accuracies(r, "fgsm").mean()
  assert accuracies(r, "pgd")[-1] < r["clean_accuracy"]                     # attacks bite
  assert json.loads((tmp_path / "run" / "robustness.json").read_text())["pgd"] == r["pgd"]
  assert "input coordinates" in r["units"]


def test_vmapped_runs_under_a_root(tmp_path, capsys):
  config = tiny_moons(train__steps=100, train__eval_every=100, train__checkpoint_every=100)
  summaries = train_seeds(config, [0, 1], tmp_path / "attention=metric")
  assert robustness.main([f"--workdir={tmp_path}", "--sigmas=0,0.3", "--eps=0,0.2",
                          "--pgd-steps=3"]) == 0
  for seed, s in zip([0, 1], summaries):   # the right slice of the stacked checkpoint
    r = json.loads((tmp_path / "attention=metric" / f"seed={seed}" / "robustness.json")
                   .read_text())
    assert r["clean_accuracy"] == pytest.approx(s["test/accuracy"])
  assert (tmp_path / "robustness.png").read_bytes()[:4] == b"\x89PNG"
  text = (tmp_path / "robustness.md").read_text()
  assert "| FGSM eps | attention=metric |" in text and "](robustness.png)" in text
  # The report cites the command with its flags; another grid never overwrites it silently.
  assert (f"`python -m metricattn.robustness --workdir={tmp_path} --sigmas=0,0.3 --eps=0,0.2 "
          "--pgd-steps=3`") in text
  assert robustness.main([f"--workdir={tmp_path}", "--sigmas=0,0.5", "--eps=0,0.2",
                          "--pgd-steps=3"]) == 2
  assert (f"error: {tmp_path / 'robustness.json'} was made with --sigmas=0,0.3 --eps=0,0.2 "
          "--pgd-steps=3, not --sigmas=0,0.5 --eps=0,0.2 --pgd-steps=3; rerun with its flags, "
          "or pass --force to replace it") in capsys.readouterr().err
  assert (tmp_path / "robustness.md").read_text() == text
  moved = tmp_path / "moved"   # a root moved elsewhere reuses its runs' robustness.json
  moved.mkdir()
  (tmp_path / "attention=metric").rename(moved / "attention=metric")
  assert robustness.main([f"--workdir={moved}", "--sigmas=0,0.3", "--eps=0,0.2",
                          "--pgd-steps=3"]) == 0
  assert (moved / "robustness.md").read_text() == text.replace(str(tmp_path), str(moved))


def test_image_run_in_pixel_units(tmp_path):
  config = load_config("configs/ipn_mnist.py", "dataset=digits,attention=l2,steps=30",
                       train__eval_every=30, train__checkpoint_every=30)
  summary = train_and_evaluate(config, tmp_path / "digits")
  settings = robustness_eval.Settings(sigmas=(0.0, 0.5), epsilons=(0.0, 0.3), pgd_steps=3)
  r = robustness_eval.evaluate_run(tmp_path / "digits", settings)
  assert r["clean_accuracy"] == pytest.approx(summary["test/accuracy"])
  assert "pixel units" in r["units"] and r["examples"] == 360
  space = attacks.input_space(config)
  assert space.lo[0] == pytest.approx(-0.3053 / 0.3760)   # pixel 0 after normalisation


def test_translation_run_is_refused(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"task": "translation", "seed": 0}))
  with pytest.raises(UserError, match="needs a classifier"):
    robustness_eval.restore_run(tmp_path)
