"""Trivial baselines (metricattn/baselines.py): Moon numbers, the translation baselines on a
tiny split, the report section, the command and missing data as one line."""

import json

import pytest

from metricattn import baselines


@pytest.fixture(scope="module")
def moons():
  return baselines.compute("moons", "test")


def test_moons_test_budget(moons):
  assert moons["experiment"] == "moons" and moons["metric"] == "test/accuracy"
  assert moons["seeds"] == [0, 1]  # the Moon data depends on the run seed
  assert moons["splits"] == {"train": 400, "test": 100}
  by_name = {b["name"]: b for b in moons["baselines"]}
  assert list(by_name) == ["logistic regression", "kNN (k = 15)", "point-wise MLP"]
  for b in moons["baselines"]:
    values = b["metrics"]["test/accuracy"]["values"]
    assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
    assert b["value"] == pytest.approx(sum(values) / 2)
  # a line cannot separate the moons; 15 neighbours can
  assert by_name["logistic regression"]["value"] < by_name["kNN (k = 15)"]["value"] - 0.05
  assert by_name["kNN (k = 15)"]["value"] > 0.9
  assert json.loads(json.dumps(moons)) == moons


def test_translation_baselines_on_a_tiny_split():
  config = baselines.experiment_config("translation_synthetic", "test")
  train = ["the cat sat on the mat", "a dog ran in the park", "birds sing in the morning"]
  texts = {"train": (train, [s.upper() for s in train]),
           "test": (["a dog ran in the park", "the cat sat on the mat"],
                    ["a dog ran in the park", "the cat sat on the mat"])}
  copy, retrieval = baselines.translation_runs(config, texts)
  assert copy[0] == "copy the source"
  assert copy[1]["test/bleu"] == pytest.approx(100.0)  # the source is the reference
  assert copy[1]["test/chrf"] == pytest.approx(100.0)
  # retrieval finds the exact training duplicate and returns its target
  assert baselines.retrieve(train, ["t0", "t1", "t2"], ["a dog ran in the park"]) == ["t1"]
  assert baselines.retrieve(train, ["t0", "t1", "t2"], ["birds sing in the morning!"]) == ["t2"]
  assert retrieval[1]["test/bleu"] < 100.0  # its targets are upper case, the references not


def test_markdown_section_names_the_baselines(moons):
  text = "\n".join(baselines.markdown_lines(moons))
  assert text.startswith("## Trivial baselines")
  for name in ("logistic regression", "kNN (k = 15)", "point-wise MLP", "test/accuracy",
               "train split", "2 run seeds"):
    assert name in text


def test_command_writes_json(tmp_path, capsys):
  out = tmp_path / "moons" / "baselines.json"
  assert baselines.main(["moons", "--budget", "test", "--out", str(out)]) == 0
  result = json.loads(out.read_text())
  assert result["experiment"] == "moons" and result["budget"] == "test"
  assert [b["name"] for b in result["baselines"]][0] == "logistic regression"
  assert "## Trivial baselines" in capsys.readouterr().out


def test_missing_data_is_one_line(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)  # data/multi30k is relative to the working directory
  monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: pytest.fail("downloaded"))
  assert baselines.main(["multi30k", "--budget", "test"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: Multi30k files missing") and err.count("\n") == 1
  assert baselines.main(["nosuch"]) == 2
  assert "unknown experiment 'nosuch'" in capsys.readouterr().err


def test_set_overrides_come_after_the_budget():
  config = baselines.experiment_config("mesh_seg", "test", overrides=("data.features=hks_short",))
  assert config.data.features == "hks_short" and config.data.num_train == 8  # the budget's


def test_knn_search_is_timed_only_where_auto_takes_brute_force_and_both_agree():
  import numpy as np
  from sklearn.neighbors import KNeighborsClassifier
  rng = np.random.default_rng(0)
  x, q = rng.standard_normal((3000, 16)), rng.standard_normal((700, 16))
  y = (x[:, 0] > 0).astype(int)
  assert baselines.knn_search(x[:, :15], q[:, :15]) == "auto"
  assert baselines.knn_search(np.hstack([x, x, x]), np.hstack([q, q, q])) == "auto"  # 48
  assert baselines.knn_search(x, q) in ("brute", "kd_tree")
  preds = [KNeighborsClassifier(baselines.KNN_K, algorithm=a).fit(x, y).predict(q)
           for a in ("brute", "kd_tree")]
  np.testing.assert_array_equal(*preds)
