"""Translation length buckets (#26): batches cut to bucket widths with their tokens unchanged,
the same loss as unbucketed batches, evaluation sorted with its references, and a tiny run of
the synthetic config that trains, evaluates and resumes, also as an old run without the field
and as vmapped seeds over 2 CPU devices."""

import json

import numpy as np
import pytest
import sacrebleu
from flax import nnx

from metricattn.data import get_dataset
from metricattn.data.translation import bucket_widths
from metricattn.errors import UserError
from metricattn.fileio import read_jsonl
from metricattn.models import build_model
from metricattn.runs import CHANGES
from metricattn.tasks import Translation
from metricattn.train import check_config, train_and_evaluate
from tests.helpers import cli, load_config
from tests.test_translation_data import synthetic_config

pytestmark = pytest.mark.usefixtures("fast_compile")


def long_config(buckets: int):
  """Synthetic sentences of 2-30 words (source and target up to 31 tokens wide)."""
  c = synthetic_config(max_words=30, max_len=40, batch_size=4, num_eval=30, buckets=buckets)
  c.eval.batch_size = 8
  return c


def test_bucket_widths():
  assert bucket_widths(48, 4).tolist() == [16, 24, 40, 48]
  assert bucket_widths(61, 4).tolist() == [16, 32, 48, 61]
  assert bucket_widths(256, 4).tolist() == [64, 128, 192, 256]
  assert bucket_widths(11, 3).tolist() == [8, 11]
  assert bucket_widths(5, 8).tolist() == [5]
  assert bucket_widths(48, 0).tolist() == [48]


def test_train_batches_are_cut_to_bucket_widths_with_the_same_tokens():
  plain, bucketed = get_dataset(long_config(0)), get_dataset(long_config(3))
  assert plain.info == bucketed.info and plain.info["src_len"] == 31
  widths = set()
  for step in range(40):
    a, b = plain.train_batch(step), bucketed.train_batch(step)
    w_src, w_tgt = b["src"].shape[1], b["tgt_in"].shape[1]
    assert w_src in (16, 24, 31) and w_tgt in (16, 24, 31) and b["tgt_out"].shape[1] == w_tgt
    widths.add((w_src, w_tgt))
    for k, v in b.items():
      w = v.shape[1]
      np.testing.assert_array_equal(a[k][:, :w], v)
      assert not a[k][:, w:].any()  # only padding was cut
    # the smallest bucket that holds the batch
    smaller = [x for x in (16, 24) if x < w_src]
    assert not smaller or (a["src"][:, smaller[-1]:] != 0).any()
  assert len(widths) > 1


def test_evaluation_is_sorted_with_its_references():
  plain, bucketed = get_dataset(long_config(0)), get_dataset(long_config(3))

  def rows(data, split):
    refs, out = data.references(split), []
    for batch in data.eval_batches(split):
      assert batch["src"].shape[0] == 8 and batch["tgt_in"].shape == batch["tgt_out"].shape
      for r in range(8):
        if batch["weight"][r] > 0:
          out.append((data.detokenize(batch["tgt_out"][r]), refs[len(out)],
                      tuple(batch["src"][r][batch["src"][r] != 0])))
    assert len(out) == len(refs)
    return out

  for split in plain.eval_splits:
    a, b = rows(plain, split), rows(bucketed, split)
    assert all(hyp == ref for hyp, ref, _ in b)  # references follow eval_batches
    assert sorted(a) == sorted(b) and a != b  # the same pairs, in another order
    widths = [batch["src"].shape[1] for batch in bucketed.eval_batches(split)]
    assert widths == sorted(widths) and widths[0] < 31
    # BLEU of the same hypotheses against their references: unchanged by the order
    hyps = [h[::-1] for h, _, _ in a]
    by_ref = dict(zip((r for _, r, _ in a), hyps))
    assert sacrebleu.corpus_bleu(hyps, [[r for _, r, _ in a]]).score == pytest.approx(
        sacrebleu.corpus_bleu([by_ref[r] for _, r, _ in b], [[r for _, r, _ in b]]).score)


def test_bucketed_loss_equals_the_unbucketed_loss():
  config = load_config("configs/translation_synthetic.py", "attention=metric")
  config.data, config.model.max_len = long_config(3).data, 40
  plain, bucketed = get_dataset(long_config(0)), get_dataset(long_config(3))
  model = build_model(config, plain.info, nnx.Rngs(params=0))
  task = Translation(config)
  for step in range(3):
    a, b = plain.train_batch(step), bucketed.train_batch(step)
    la, ma = task.loss(model, a, train=False)
    lb, mb = task.loss(model, b, train=False)
    np.testing.assert_allclose(lb, la, rtol=1e-5)
    np.testing.assert_allclose(mb["token_accuracy"], ma["token_accuracy"], rtol=1e-5)
  sums = [{}, {}]
  for s, data in zip(sums, (plain, bucketed)):
    for batch in data.eval_batches("val"):
      for k, v in task.eval_sums(model, batch).items():
        s[k] = s.get(k, 0.0) + float(v)
  assert sums[1]["tokens"] == sums[0]["tokens"]
  assert sums[1]["nll"] == pytest.approx(sums[0]["nll"], rel=1e-5)


def test_bad_buckets_is_one_line():
  config = load_config("configs/translation_synthetic.py", data__buckets=-1)
  with pytest.raises(UserError, match=r"data.buckets must be an integer >= 0; got -1"):
    check_config(config)


TINY = dict(model__num_layers=1, model__num_heads=2, model__d_model=16, model__qk_dim=16,
            model__d_mlp=8, model__d_ff=32)  # programs that compile fast


def synthetic(steps: int, buckets: int | None):
  config = load_config("configs/translation_synthetic.py", f"steps={steps}",
                       data__batch_size=4, data__num_eval=20, train__log_every=1, **TINY)
  if buckets is None:  # a run older than the field
    del config.data["buckets"]
  else:
    config.data.buckets = buckets
  return config


def train_losses(workdir):
  return [r["loss"] for r in read_jsonl(workdir / "metrics.jsonl") if r["split"] == "train"]


def test_bucketed_run_trains_evaluates_and_resumes(tmp_path):
  straight = train_and_evaluate(synthetic(8, 3), tmp_path / "straight")
  train_and_evaluate(synthetic(4, 3), tmp_path / "resumed")
  resumed = train_and_evaluate(synthetic(8, 3), tmp_path / "resumed")
  for key in ("train/loss", "val/loss", "val/bleu", "test/loss", "test/bleu"):
    assert resumed[key] == straight[key], key
  assert straight["compile_seconds"] > 0
  plain = train_and_evaluate(synthetic(8, 0), tmp_path / "plain")
  np.testing.assert_allclose(train_losses(tmp_path / "straight"),
                             train_losses(tmp_path / "plain"), rtol=1e-4)
  assert straight["val/loss"] == pytest.approx(plain["val/loss"], rel=1e-4)

  # A run older than the field resumes with today's config (buckets 0, the same batches).
  train_and_evaluate(synthetic(4, None), tmp_path / "old")
  assert "buckets" not in json.loads((tmp_path / "old" / "config.json").read_text())["data"]
  old = train_and_evaluate(synthetic(8, 0), tmp_path / "old")
  assert old["train/loss"] == plain["train/loss"] and old["val/bleu"] == plain["val/bleu"]
  changes = [json.loads(line) for line in (tmp_path / "old" / CHANGES).read_text().splitlines()]
  assert {"step": 4, "key": "data.buckets", "old": "<absent>", "new": 0,
          "forced": False} in changes


def test_bucketed_seeds_vmapped_over_two_cpu_devices(tmp_path):
  args = ["metricattn.main", "--config=configs/translation_synthetic.py:steps=8",
          "--config.data.buckets=3", "--config.data.batch_size=4",
          "--config.data.num_eval=20", "--config.train.log_every=1",
          *(f"--config.{k.replace('__', '.')}={v}" for k, v in TINY.items())]
  out = cli(*args, "--seeds=0,1,2", "--cpu_devices=2", f"--workdir={tmp_path / 'split'}",
            timeout=900)
  assert out.returncode == 0, out.stderr
  train_and_evaluate(synthetic(8, 3), tmp_path / "single")
  split = tmp_path / "split" / "seed=0"
  assert json.loads((split / "summary.json").read_text())["devices"] == 2
  np.testing.assert_allclose(train_losses(split), train_losses(tmp_path / "single"),
                             rtol=1e-4, atol=1e-5)
