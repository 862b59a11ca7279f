"""Translation data: the Multi30k loader on files in the published layout, tokenizers saved
and reused, the word vocabulary's minimum frequency, the synthetic task, bad input."""

import gzip

import ml_collections
import numpy as np
import pytest

from metricattn.data import get_dataset
from metricattn.data import tokenizers as tok
from metricattn.data.synthetic_translation import FIRST_WORD, reorder
from metricattn.data.translation import MULTI30K_FILES, Multi30kData
from metricattn.errors import UserError

EN = "a the man woman dog cat red blue walks runs sits on in street park grass".split()
DE = "ein der mann frau hund katze rot blau geht läuft sitzt auf im straße park gras".split()
SIZES = {"train": 80, "val": 12, "test": 10}


def sentence_pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
  """n (English, German) sentences of 3-8 words, word i <-> word i, ending with '.'."""
  rng = np.random.default_rng(seed)
  en, de = [], []
  for _ in range(n):
    idx = rng.integers(0, len(EN), size=rng.integers(3, 9))
    en.append(" ".join(EN[i] for i in idx).capitalize() + ".")
    de.append(" ".join(DE[i] for i in idx).capitalize() + ".")
  return en, de


def write_multi30k(root, gz_train: bool = True):
  """The Task 1 raw layout: train.{en,de}(.gz), val.*, test_2016_flickr.*."""
  root.mkdir(parents=True, exist_ok=True)
  texts = {}
  for i, (split, base) in enumerate(MULTI30K_FILES.items()):
    en, de = sentence_pairs(SIZES[split], seed=i)
    texts[split] = (en, de)
    for lang, lines in (("en", en), ("de", de)):
      data = "".join(line + "\n" for line in lines)
      if split == "train" and gz_train:
        with gzip.open(root / f"{base}.{lang}.gz", "wt", encoding="utf-8") as f:
          f.write(data)
      else:
        (root / f"{base}.{lang}").write_text(data, encoding="utf-8")
  return texts


def multi30k_config(data_dir, tokenizer_dir, **data) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = dict(name="multi30k", data_dir=str(data_dir), download=False, url="",
                src_lang="en", tgt_lang="de", tokenizer="sentencepiece", vocab_size=60,
                min_freq=2, shared_vocab=True, max_len=96, tokenizer_dir=str(tokenizer_dir),
                batch_size=8)
  c.data.update(data)
  c.eval = dict(batch_size=5)
  return c


def synthetic_config(**data) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = dict(name="synthetic_translation", seed=-1, num_words=12, min_words=2,
                max_words=7, reorder="swap", num_train=100, num_eval=20, max_len=10,
                batch_size=16)
  c.data.update(data)
  c.eval = dict(batch_size=8)
  return c


@pytest.fixture
def multi30k_dir(tmp_path):
  texts = write_multi30k(tmp_path / "multi30k")
  return tmp_path / "multi30k", texts


def test_multi30k_loader(multi30k_dir, tmp_path):
  data_dir, texts = multi30k_dir
  data = Multi30kData(multi30k_config(data_dir, tmp_path / "work"))
  info = data.info
  assert info["num_train"] == SIZES["train"] and data.eval_splits == ("val", "test")
  assert info["src_vocab_size"] == info["tgt_vocab_size"] > 4
  batch = data.train_batch(0)
  assert set(batch) == {"src", "tgt_in", "tgt_out"}
  assert all(v.dtype == np.int32 and v.shape[0] == 8 for v in batch.values())
  assert batch["src"].shape[1] == info["src_len"] and batch["tgt_in"].shape[1] == info["tgt_len"]
  assert np.all(batch["tgt_in"][:, 0] == tok.BOS)
  # tgt_in is tgt_out shifted right; every row ends with EOS (nothing here is truncated).
  assert info["num_truncated"] == 0
  shifted = batch["tgt_out"][:, :-1]
  np.testing.assert_array_equal(batch["tgt_in"][:, 1:], np.where(shifted == tok.EOS, 0, shifted))
  for row in (*batch["src"], *batch["tgt_out"]):
    assert row[np.count_nonzero(row) - 1] == tok.EOS
  # Evaluation covers the split in order, last chunk padded with weight 0.
  batches = list(data.eval_batches("val"))
  assert [b["src"].shape[0] for b in batches] == [5, 5, 5]
  weight = np.concatenate([b["weight"] for b in batches])
  assert weight.sum() == SIZES["val"] and np.all(weight[SIZES["val"]:] == 0)
  assert data.references("val") == texts["val"][1]
  assert data.references("test") == texts["test"][1]
  decoded = [data.detokenize(row) for b in batches for row, w in zip(b["tgt_out"], b["weight"])
             if w > 0]
  assert decoded == texts["val"][1]


def test_multi30k_batches_are_a_function_of_seed_and_step(multi30k_dir, tmp_path):
  data_dir, _ = multi30k_dir
  config = multi30k_config(data_dir, tmp_path / "work")
  a, b = Multi30kData(config), Multi30kData(config)
  for step in (0, 3, 17):
    for k, v in a.train_batch(step).items():
      np.testing.assert_array_equal(v, b.train_batch(step)[k])
  assert not np.array_equal(a.train_batch(0)["src"], a.train_batch(1)["src"])


def test_tokenizer_saved_and_reused(multi30k_dir, tmp_path, monkeypatch):
  data_dir, _ = multi30k_dir
  work = tmp_path / "work"
  first = Multi30kData(multi30k_config(data_dir, work))
  assert (work / "spm_joint.model").exists() and (work / "tokenizer.json").exists()
  saved = (work / "spm_joint.model").read_bytes()

  def no_training(*args, **kwargs):
    raise AssertionError("the saved tokenizer must be reused, not retrained")

  monkeypatch.setattr(tok, "train_sentencepiece", no_training)
  again = Multi30kData(multi30k_config(data_dir, tmp_path / "elsewhere"), tokenizer_dir=work)
  assert (work / "spm_joint.model").read_bytes() == saved
  np.testing.assert_array_equal(first.arrays["train"]["src"], again.arrays["train"]["src"])
  with pytest.raises(UserError, match="tokenizer saved in"):
    Multi30kData(multi30k_config(data_dir, work, vocab_size=80))


def test_too_small_a_vocabulary_is_one_line(multi30k_dir, tmp_path):
  """SentencePiece refuses fewer pieces than the training split has characters: through
  `main`, one `error:` line naming data.vocab_size, the least it takes and the key to set;
  that least value then trains."""
  from tests.helpers import cli
  data_dir, _ = multi30k_dir
  r = cli("metricattn.main", "--config=configs/multi30k_transformer.py:batch=4",
          f"--workdir={tmp_path / 'run'}", f"--config.data.data_dir={data_dir}",
          "--config.data.vocab_size=20", "--config.train.steps=1")
  assert r.returncode == 2, r.stderr[-2000:]
  assert r.stderr.startswith("error: data.vocab_size=20 is too small for the training split "
                             "of this corpus: SentencePiece needs a piece for each of its "
                             "characters and the special ids, at least "), r.stderr[-2000:]
  assert len(r.stderr.splitlines()) == 1, r.stderr[-2000:]
  least = int(r.stderr.split("at least ")[1].split(";")[0])
  assert r.stderr.endswith(f"; set --config.data.vocab_size={least} or more\n")
  with pytest.raises(tok.VocabTooSmall, match=f"^data.vocab_size={least - 1} is too small"):
    Multi30kData(multi30k_config(data_dir, tmp_path / "w1", vocab_size=least - 1))
  Multi30kData(multi30k_config(data_dir, tmp_path / "w2", vocab_size=least))

def test_separate_vocabularies(multi30k_dir, tmp_path):
  data_dir, texts = multi30k_dir
  data = Multi30kData(multi30k_config(data_dir, tmp_path / "work", shared_vocab=False))
  assert (tmp_path / "work" / "spm_en.model").exists()
  assert (tmp_path / "work" / "spm_de.model").exists()
  assert data.references("test") == texts["test"][1]


def test_word_vocabulary_min_freq():
  lines = ["a dog runs .", "a cat runs !", "the dog sits ."]
  vocab = tok.build_word_vocab(lines, min_freq=2)
  # Specials, then count >= 2 by count (ties alphabetical); "cat", "the", "!" ... are out.
  assert vocab == list(tok.SPECIALS) + [".", "a", "dog", "runs"]
  words = tok.WordTokenizer(vocab)
  assert words.encode("a cat runs .") == [5, tok.UNK, 7, 4]
  assert words.decode(words.encode("a dog runs .")) == "a dog runs."


@pytest.mark.parametrize("text", ["Fahrrad - rot.", "a well-known dog.",
                                  "T-Shirt-Träger - blau, 3-4 Hunde.", "don't (x) [y] ok!"])
def test_word_split_and_join_round_trip_hyphens(text):
  assert tok.join_words(tok.split_words(text)) == text


def test_word_inner_hyphen_is_its_own_token():
  assert tok.split_words("well-known - fine") == ["well", tok.HYPHEN, "known", "-", "fine"]
  words = tok.WordTokenizer(tok.build_word_vocab(["Fahrrad - rot, well-known."], 1))
  assert words.decode(words.encode("Fahrrad - rot, well-known.")) == \
      "Fahrrad - rot, well-known."


def test_multi30k_word_level(multi30k_dir, tmp_path):
  data_dir, texts = multi30k_dir
  work = tmp_path / "work"
  data = Multi30kData(multi30k_config(data_dir, work, tokenizer="word", shared_vocab=False))
  en_vocab = (work / "vocab_en.txt").read_text(encoding="utf-8").split("\n")[:-1]
  assert en_vocab == tok.build_word_vocab(texts["train"][0], min_freq=2)
  assert data.info["src_vocab_size"] == len(en_vocab)
  assert data.detokenize(data.arrays["val"]["tgt_out"][0]).split()[0] in (
      texts["val"][1][0].split()[0], "<unk>")


def test_missing_files_is_one_line(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError) as e:
    Multi30kData(multi30k_config(tmp_path / "empty", tmp_path / "work"))
  msg = str(e.value)
  assert "\n" not in msg and str(tmp_path / "empty") in msg and "train.en" in msg
  assert "data.download" in msg


def test_unpaired_files_and_missing_tokenizer_dir(multi30k_dir, tmp_path):
  data_dir, _ = multi30k_dir
  with pytest.raises(UserError, match="tokenizer_dir"):
    Multi30kData(multi30k_config(data_dir, ""))
  (data_dir / "val.de").write_text("only one line\n", encoding="utf-8")
  with pytest.raises(UserError, match="do not pair up"):
    Multi30kData(multi30k_config(data_dir, tmp_path / "work"))


def test_synthetic_task_is_deterministic():
  a, b = get_dataset(synthetic_config()), get_dataset(synthetic_config())
  for split in ("train", "val", "test"):
    for k, v in a.arrays[split].items():
      np.testing.assert_array_equal(v, b.arrays[split][k])
  np.testing.assert_array_equal(a.train_batch(5)["src"], b.train_batch(5)["src"])
  other = get_dataset(synthetic_config(seed=1))
  assert not np.array_equal(a.arrays["train"]["src"], other.arrays["train"]["src"])
  assert a.info["src_vocab_size"] == a.info["tgt_vocab_size"] == FIRST_WORD + 12


@pytest.mark.parametrize("how", ["swap", "reverse", "none"])
def test_synthetic_translation_is_a_word_map_plus_reordering(how):
  data = get_dataset(synthetic_config(reorder=how))
  arrays = data.arrays["train"]
  mapping = {}
  for src, tgt in zip(arrays["src"], arrays["tgt_out"]):
    words = [int(w) for w in src if w not in (tok.PAD, tok.EOS)]
    target = [int(w) for w in tgt if w not in (tok.PAD, tok.EOS)]
    back = reorder(target, how)  # each reordering is its own inverse
    for s, t in zip(words, back):
      assert mapping.setdefault(s, t) == t
  assert sorted(mapping.values()) == sorted(set(mapping.values()))  # a bijection
  refs = data.references("val")
  assert [data.detokenize(r) for r in data.arrays["val"]["tgt_out"]] == refs


def test_synthetic_bad_lengths():
  with pytest.raises(UserError, match="max_len"):
    get_dataset(synthetic_config(max_len=5))
  with pytest.raises(UserError, match="reorder"):
    get_dataset(synthetic_config(reorder="shuffle"))
