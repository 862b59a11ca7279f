"""A synthetic parallel task generated from a seed, for tests and offline demos.

Source sentences are random words a0..a{V-1} (lengths uniform in [min_words, max_words]);
the "translation" maps every word through a fixed, seeded bijection to b0..b{V-1} and then
reorders the sentence:
  swap     swaps neighbours: (1 2 3 4 5) -> (2 1 4 3 5)
  reverse  reverses the sentence
  none     keeps the order
Everything (vocabulary bijection, sentences, splits) is a pure function of the seed.
Word ids are 4 + index on both sides (0-3 are the special ids of tokenizers.py); the text of
the target side, for BLEU, is the words joined by spaces. Splits: train, val, test; "val"
and "test" are evaluated.

config.data fields read for `name = "synthetic_translation"` (suggested defaults):
  seed        data seed; -1 = config.seed                                   -1
  num_words   words per language                                            16
  min_words   shortest sentence                                             3
  max_words   longest sentence                                              10
  reorder     "swap", "reverse" or "none"                                   "swap"
  num_train   training pairs                                                2000
  num_eval    pairs in each of val and test                                 200
  max_len     most tokens per sentence incl. BOS/EOS (>= max_words + 1)     16
  batch_size  training pairs per step                                       32
config.eval.batch_size: pairs per evaluation batch (e.g. 100).
"""

from __future__ import annotations

import numpy as np

from metricattn.data.translation import ParallelData
from metricattn.errors import UserError

FIRST_WORD = 4  # ids 0-3 are padding, unknown, BOS, EOS
REORDERS = ("swap", "reverse", "none")


def reorder(words: list[int], how: str) -> list[int]:
  if how == "reverse":
    return words[::-1]
  if how == "swap":
    out = list(words)
    for i in range(0, len(out) - 1, 2):
      out[i], out[i + 1] = out[i + 1], out[i]
    return out
  return list(words)


def make_pairs(rng: np.random.Generator, n: int, bijection: np.ndarray, min_words: int,
               max_words: int, how: str) -> tuple[list[list[int]], list[list[int]]]:
  """n (source ids, target ids) pairs."""
  lengths = rng.integers(min_words, max_words + 1, size=n)
  src = [list(FIRST_WORD + rng.integers(0, len(bijection), size=k)) for k in lengths]
  tgt = [reorder([FIRST_WORD + int(bijection[w - FIRST_WORD]) for w in s], how) for s in src]
  return [[int(w) for w in s] for s in src], tgt


def target_text(ids) -> str:
  return " ".join(f"b{int(i) - FIRST_WORD}" for i in ids)


def synthetic_splits(seed: int, num_words: int, min_words: int, max_words: int, how: str,
                     num_train: int, num_eval: int) -> dict[str, tuple[list, list, list[str]]]:
  """split -> (source ids, target ids, target texts), a pure function of the arguments."""
  if how not in REORDERS:
    raise UserError(f"unknown data.reorder {how!r}; allowed: {', '.join(REORDERS)}")
  if not 1 <= min_words <= max_words:
    raise UserError(f"need 1 <= data.min_words <= data.max_words; got {min_words}, {max_words}")
  bijection = np.random.default_rng([seed, 0]).permutation(num_words)
  out = {}
  for i, (split, n) in enumerate([("train", num_train), ("val", num_eval), ("test", num_eval)]):
    src, tgt = make_pairs(np.random.default_rng([seed, i + 1]), n, bijection, min_words,
                          max_words, how)
    out[split] = (src, tgt, [target_text(t) for t in tgt])
  return out


class SyntheticTranslation(ParallelData):
  """The synthetic task from config.data (see module docstring)."""

  def __init__(self, config):
    d = config.data
    seed = int(config.seed if d.seed < 0 else d.seed)
    if d.max_len < d.max_words + 1:
      raise UserError(f"data.max_len {d.max_len} cannot hold {d.max_words} words plus "
                      "BOS/EOS; raise it to at least max_words + 1")
    splits = synthetic_splits(seed, d.num_words, d.min_words, d.max_words, d.reorder,
                              d.num_train, d.num_eval)
    vocab = FIRST_WORD + int(d.num_words)
    super().__init__(config, splits, vocab, vocab, target_text, eval_splits=("val", "test"))
