"""Every bad config value is one line, before anything is created."""

import copy
import subprocess
import sys

import pytest

from metricattn import registry
from metricattn.errors import UserError
from metricattn.experiment import load_config
from metricattn.validation import check_values

BAD = [
    ("data.noise", -1.0, "data.noise must be a finite number >= 0; got -1.0"),
    ("seed", -1, "seed must be an integer >= 0; got -1"),
    ("eval.batch_size", 0, "eval.batch_size must be a positive integer; got 0"),
    ("model.width", 0, "model.width must be a positive integer; got 0"),
    ("model.qk_dim", 0, "model.qk_dim must be a positive integer; got 0"),
    ("data.num_test", 0, "data.num_test must be a positive integer; got 0"),
    ("model.depth", -1, "model.depth must be an integer >= 0; got -1"),
    ("optimizer.weight_decay", -1.0, "optimizer.weight_decay must be a finite number >= 0"),
    ("optimizer.grad_clip", -1.0, "optimizer.grad_clip must be a finite number >= 0"),
    ("data.seed", -5, "data.seed must be an integer >= 0, or -1 for the run's seed; got -5"),
    ("optimizer.lr", float("nan"), "optimizer.lr must be a finite number > 0; got nan"),
    ("optimizer.lr", float("inf"), "optimizer.lr must be a finite number > 0; got inf"),
    ("train.steps", 0, "train.steps must be a positive integer; got 0"),
    ("model.scale", -1.0, "model.scale must be None or a finite number > 0"),
    ("train.stacked_seeds", "pmap", "train.stacked_seeds must be one of vmap, unroll; got 'pmap'"),
]


def moons():
  return load_config(registry.get("moons"), "test", "metric")


@pytest.mark.parametrize("key,value,message", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_value_is_named(key, value, message):
  config = copy.deepcopy(moons())
  section, _, name = key.rpartition(".")
  (config[section] if section else config)[name] = value
  with pytest.raises(UserError, match="^" + message.replace("(", r"\(").replace(")", r"\)")
                     .replace("[", r"\[").replace("+", r"\+")):
    check_values(config)


@pytest.mark.parametrize("value", [-1, 1.5, None, True, "all"])
def test_train_pairs_is_a_count_or_0_for_all(value):
  """data.train_pairs (l10n: training pairs kept, 0 = all) is checked with the others."""
  import ml_collections
  for good in (0, 1000):
    check_values(ml_collections.ConfigDict({"data": {"train_pairs": good}}))
  with pytest.raises(UserError, match=r"^data\.train_pairs must be an integer >= 0 \(0: all\); "
                     f"got {value!r}$"):
    check_values(ml_collections.ConfigDict({"data": {"train_pairs": value}}))


def test_stacked_seeds_rule_allows_what_the_feeder_does():
  import ml_collections
  from metricattn.feeder import STACKED_SEEDS
  for how in STACKED_SEEDS:
    check_values(ml_collections.ConfigDict({"train": {"stacked_seeds": how}}))


def test_every_registered_budget_passes():
  for exp in registry.EXPERIMENTS.values():
    for budget in exp.budgets:
      for kind in exp.kinds_of(budget):
        check_values(load_config(exp, budget, kind))


def test_main_refuses_a_bad_value_before_making_the_workdir(tmp_path):
  workdir = tmp_path / "run"
  out = subprocess.run([sys.executable, "-m", "metricattn.main",
                        "--config=configs/moons_ipn.py", f"--workdir={workdir}",
                        "--config.model.depth=-1"], capture_output=True, text=True)
  assert out.returncode == 2, out.stderr
  assert out.stderr.strip() == "error: model.depth must be an integer >= 0; got -1"
  assert not workdir.exists()


@pytest.mark.parametrize("command", [["metricattn.main", "--workdir={tmp}/w"],
                                     ["metricattn.sweep", "--root={tmp}/r"]])
@pytest.mark.parametrize("raises, error", [("1 / 0", "ZeroDivisionError: division by zero"),
                                           ("int('x')", "ValueError: invalid literal for int() "
                                                        "with base 10: 'x'")])
def test_a_config_whose_get_config_raises_is_one_line(tmp_path, command, raises, error):
  """Also a ValueError, which ml_collections' flag parser wraps with its traceback."""
  config = tmp_path / "broken.py"
  config.write_text(f"def get_config(arg=None):\n  return {raises}\n")
  out = subprocess.run([sys.executable, "-m", command[0], f"--config={config}",
                        command[1].format(tmp=tmp_path)], capture_output=True, text=True)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      f"error: {'the base config: ' if 'sweep' in command[0] else ''}config {config}: "
      f"get_config() failed: {error}"]


def test_report_skips_a_summary_with_a_string_for_a_number(tmp_path, capsys):
  import json
  from metricattn.comparison import load_runs
  for seed, acc in ((0, 0.9), (1, "0.8")):
    w = tmp_path / "attention=l2" / f"seed={seed}"
    w.mkdir(parents=True)
    (w / "config.json").write_text(json.dumps({"seed": seed}))
    (w / "summary.json").write_text(json.dumps({"test/accuracy": acc, "step": 10}))
  assert [r["seed"] for r in load_runs(tmp_path)] == [0]
  assert ("summary.json's test/accuracy is '0.8', not a number"
          in capsys.readouterr().err)


def test_a_start_that_fails_on_its_data_leaves_no_workdir(tmp_path):
  workdir = tmp_path / "run"
  out = subprocess.run([sys.executable, "-m", "metricattn.main",
                        "--config=configs/ipn_mnist.py:dataset=fashion_mnist",
                        f"--workdir={workdir}", f"--config.data.data_dir={tmp_path / 'none'}"],
                       capture_output=True, text=True)
  assert out.returncode == 2 and out.stderr.startswith("error: data.data_dir"), out.stderr
  assert not workdir.exists()
