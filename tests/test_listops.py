"""ListOps (metricattn/data/listops.py), the Transformer encoder classifier, the rsqrt
schedule and the `lra_listops` experiment at its test budget."""

import dataclasses
import json
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from metricattn import experiment
from metricattn.data import listops
from metricattn.data.sampling import batch_indices
from metricattn.errors import UserError
from metricattn.models import build_model, num_params
from metricattn.optim import make_schedule
from tests.helpers import load_config
from tests.test_image_configs import leaves, read_only_when, run_recording_reads

SMALL = listops.Settings(seed=3, num_train=60, num_val=10, num_test=10, min_length=10,
                         max_length=60, max_depth=6, max_args=5)


def evaluate(text: str) -> tuple[int, int]:
  """(value, depth) of a ListOps expression "[MAX 2 [SM 3 4 ] ]", read with a stack."""
  stack, depth = [], 0
  for token in text.split():
    if token.startswith("["):
      stack.append((token, []))
      depth = max(depth, len(stack))
    elif token == "]":
      op, args = stack.pop()
      value = {"[MAX": max, "[MIN": min, "[MED": lambda a: int(statistics.median(a)),
               "[SM": lambda a: sum(a) % 10}[op](args)
      if not stack:
        return value, depth
      stack[-1][1].append(value)
    else:
      stack[-1][1].append(int(token))
  raise ValueError(f"unbalanced expression {text!r}")


@pytest.fixture(scope="module")
def small():
  return listops.generate(SMALL)


def test_generator_is_deterministic_from_the_seed(small):
  assert listops.generate(SMALL) == small
  other = listops.generate(dataclasses.replace(SMALL, seed=4))
  assert other["train"][0] != small["train"][0]
  # Test and val come first from the stream: a longer training set shares them.
  longer = listops.generate(dataclasses.replace(SMALL, num_train=90))
  assert longer["test"] == small["test"] and longer["val"] == small["val"]
  assert longer["train"][0][:60] == small["train"][0]


def test_lengths_sizes_and_no_duplicates(small):
  every = [tuple(seq) for split in listops.SPLITS for seq in small[split][0]]
  assert [len(small[s][0]) for s in ("train", "val", "test")] == [60, 10, 10]
  assert all(SMALL.min_length < len(seq) < SMALL.max_length for seq in every)
  assert len(set(every)) == len(every)
  assert all(0 < t < len(listops.VOCAB) for seq in every for t in seq)


def test_labels_are_the_values_of_the_expressions(small):
  ops, depths = set(), []
  for split in listops.SPLITS:
    for seq, label in zip(*small[split]):
      text = listops.to_text(seq)
      value, depth = evaluate(text)
      assert value == label, text
      ops |= {t for t in text.split() if t.startswith("[")}
      depths.append(depth)
  assert ops == set(listops.OPERATORS)
  assert max(depths) <= SMALL.max_depth - 1  # the deepest operator sits above max_depth
  assert listops.median([1, 2, 3, 9]) == 2 == int(np.median([1, 2, 3, 9]))
  assert evaluate("[MED 1 2 3 9 ]") == (2, 1)


def test_cache_bucketed_length_and_batches(tmp_path, monkeypatch):
  monkeypatch.setenv("METRICATTN_DATA", str(tmp_path))
  said = []
  first = listops.load(SMALL, say=said.append)
  assert listops.cache_path(SMALL).exists() and len(said) == 2
  again = listops.load(SMALL, say=said.append)
  assert len(said) == 2  # read from the cache, not generated again
  for split in listops.SPLITS:
    np.testing.assert_array_equal(first[split][0], again[split][0])
    np.testing.assert_array_equal(first[split][1], again[split][1])
  config = load_config("configs/lra_listops.py", "size=cpu", data__seed=3,
                       data__num_train=60, data__num_val=10, data__num_test=10,
                       data__min_length=10, data__max_length=60, data__max_depth=6,
                       data__max_args=5, data__bucket=16, data__batch_size=8,
                       eval__batch_size=4)
  data = listops.ListOpsData(config)
  assert data.info["seq_len"] == 64 and data.info["vocab_size"] == 16   # 59 -> 64
  batch = data.train_batch(0)
  assert batch["x"].shape == (8, 64) and batch["x"].dtype == np.uint8
  assert [listops.to_text(row) for row in batch["x"]] == [
      listops.to_text(small_row) for small_row in
      first["train"][0][batch_indices(60, 8, 0, 0)]]
  test = list(data.eval_batches("test"))
  assert len(test) == 3 and test[-1]["weight"].tolist() == [1, 1, 0, 0]
  config.data.min_length = 70
  with pytest.raises(UserError, match="strictly between data.min_length and data.max_length"):
    listops.ListOpsData(config)


def test_warmup_rsqrt_is_lras_schedule():
  config = load_config("configs/lra_listops.py")
  schedule = make_schedule(config.optimizer, config.train.steps)
  for step in (0, 1, 500, 999, 1000, 1001, 2500, 4999):
    lra = 0.05 * min(1.0, step / 1000) / np.sqrt(max(step, 1000))  # LRA's train_utils
    np.testing.assert_allclose(float(schedule(jnp.int32(step))), lra, rtol=1e-6)


def tiny_model(pool: str, kind: str = "metric"):
  config = load_config("configs/lra_listops.py", f"size=cpu,attention={kind}",
                       model__pool=pool, model__num_layers=1, model__d_model=16,
                       model__qk_dim=16, model__d_mlp=16, model__d_ff=32,
                       model__num_heads=2, model__dropout=0.0)
  info = {"num_classes": 10, "vocab_size": 16, "seq_len": 24}
  return build_model(config, info, nnx.Rngs(params=0))


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_classifier_ignores_padding(pool):
  model = nnx.jit(lambda m, x: m(x))
  m = tiny_model(pool)
  x = jax.random.randint(jax.random.key(0), (3, 24), 1, 16).astype(jnp.uint8)
  x = x.at[:, 15:].set(0).at[1, 9:].set(0)
  logits = model(m, x)
  assert logits.shape == (3, 10)
  shorter = model(m, x[:, :16])  # less padding, same tokens
  np.testing.assert_allclose(logits, shorter, atol=1e-5)
  changed = model(m, x.at[:, 20].set(5))  # a token where there was padding
  assert not np.allclose(changed[0], logits[0], atol=1e-4)


def test_parameter_counts():
  """Golden counts of the tiny classifier; l2 ties queries and keys, metric adds g."""
  counts = {kind: num_params(tiny_model("cls", kind))
            for kind in ("softmax", "l2", "metric", "l2_lipschitz")}
  embed, head = 17 * 16, 16 * 32 + 32 + 32 * 10 + 10
  block = 4 * (16 * 16 + 16) + 2 * 2 * 16 + 16 * 32 + 32 + 32 * 16 + 16
  assert counts["softmax"] == embed + head + block + 2 * 16  # + the final LayerNorm
  assert counts["softmax"] - counts["l2"] == 16 * 16 + 16
  assert counts["metric"] - counts["l2"] == 2 * 16 * 16 + 16 + 16
  assert counts["l2_lipschitz"] == counts["l2"]


def test_config_reads_every_key(tmp_path, monkeypatch):
  monkeypatch.setenv("METRICATTN_DATA", str(tmp_path / "data"))
  exp = experiment.registry.get("lra_listops")
  config = experiment.load_config(exp, "test", "l2_lipschitz")
  config.train.steps, config.train.eval_every, config.train.checkpoint_every = 4, 2, 2
  config.lock()
  summary, read = run_recording_reads(config, tmp_path / "run", monkeypatch)
  assert summary["step"] == 4 and summary["attention"] == "l2_lipschitz"
  unread = set(leaves(config)) - read - read_only_when(config)
  assert not unread, f"config keys never read by the code: {sorted(unread)}"


def test_lra_listops_test_budget_end_to_end(tmp_path, monkeypatch):
  """The test budget with one seed (three processes, not six, to keep the suite short)."""
  monkeypatch.setenv("METRICATTN_DATA", str(tmp_path / "data"))
  exp = experiment.registry.EXPERIMENTS["lra_listops"]
  budgets = {**exp.budgets, "test": dataclasses.replace(exp.budgets["test"], seeds=1)}
  monkeypatch.setitem(experiment.registry.EXPERIMENTS, "lra_listops",
                      dataclasses.replace(exp, budgets=budgets))
  root = tmp_path / "exp"
  assert experiment.main(["lra_listops", "--budget", "test", "--root", str(root),
                          "--jobs", "2"]) == 0
  runs = sorted(p.parent.relative_to(root).as_posix() for p in root.rglob("summary.json"))
  assert runs == [f"attention={k}/seed=0" for k in ("l2", "metric", "softmax")]
  summary = json.loads((root / "attention=metric/seed=0/summary.json").read_text())
  assert summary["step"] == 20 and 0.0 <= summary["test/accuracy"] <= 1.0
  text = (root / "report.md").read_text()
  assert "Anchor (published, not ours): LRA's published vanilla Transformer on ListOps: " \
         "36.37% test accuracy" in text
  assert "| attention=metric | metric | 1 |" in text
