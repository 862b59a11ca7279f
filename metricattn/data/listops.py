"""Long Range Arena ListOps (Tay et al. 2021, after Nangia & Bowman 2018): nested list
operations as token sequences, generated from a seed, tokenised and cached.

An example is a tree. A leaf is a digit 0-9; an inner node is an operator over 2..max_args
arguments, written `[OP a1 a2 ... ]`. Its label is the tree's value (10 classes):
  MAX, MIN   the largest, the smallest argument
  MED        int(np.median(args)): the middle argument, or for an even count the mean of
             the two middle ones rounded down
  SM         the sum of the arguments modulo 10
The generator follows LRA's `lra_benchmarks/data/listops.py`: the root is at depth 1; a node
above `max_depth` is an operator with probability 0.25, else a digit; a node at `max_depth`
is a digit; an operator draws its argument count uniformly from 2..max_args and its operator
uniformly from the four. A tree is kept when its length in tokens (operators, digits and
closing brackets) is strictly between `min_length` and `max_length` (LRA: 500 and 2,000,
depth 10, 10 arguments) and it is new: no example occurs twice in the data set, across the
splits (LRA keeps a set). LRA's full set has 96,000 / 2,000 / 2,000 examples.

Tokens (`VOCAB`): 0 padding, 1-10 the digits 0-9, 11-14 `[MAX [MIN [MED [SM`, 15 `]`. This
is LRA's vocabulary as its authors meant it (google-research/long-range-arena issues #6 and
#14: the released input pipeline's tokenizer dropped the brackets, "the brackets are
required"); the parentheses of LRA's text form carry no information and are not tokens.
Each example is padded with 0 to one bucketed length, `seq_len`: the longest possible
example (max_length - 1 tokens) rounded up to a multiple of `bucket` (2,048 for LRA's
lengths and bucket 128), so that every batch has one shape.

Where this differs from LRA's script (the kept trees have the same distribution):
  - Deterministic from the seed: Python's `random.Random(seed)`, drawing only `random()`
    (the same stream on every Python version); LRA uses the global `random` and splits a
    Python set, whose order changes from process to process.
  - The splits are drawn from one stream in the order test, val, train, so the test and val
    sets do not depend on `num_train` (a shorter training set shares them).
  - A tree is abandoned as soon as it reaches `max_length` tokens (LRA builds it whole and
    then rejects it).
Generated once per setting and cached in $METRICATTN_DATA/listops (default
~/.cache/metricattn/listops), one .npz named by every setting; a broken cache file is moved
aside and generated again (data/cache.py).

Config fields (config.data.*): name "listops", seed (the data set's; the same for every run
seed), num_train, num_val, num_test, min_length, max_length, max_depth, max_args, bucket,
batch_size; config.eval.batch_size. Batches: `x` uint8 [batch, seq_len] token ids, `y`
int32 [batch]; evaluation batches add `weight` (0 for the padding rows of the last chunk).
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path

import numpy as np

from metricattn.data.cache import CorruptFile, data_root, load_guarded, load_npz, save_npz
from metricattn.data.arrays import ArrayData
from metricattn.errors import UserError

VERSION = 1  # bump when the generator changes: it is part of the cache file name
OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
END = "]"
VOCAB = ("<pad>", *(str(d) for d in range(10)), *OPERATORS, END)
PAD, DIGIT0, OP0, END_ID = 0, 1, 11, 15
NUM_CLASSES = 10
VALUE_P = 0.25  # probability that a node above max_depth is an operator (LRA's VALUE_P)
SPLITS = ("test", "val", "train")  # the order in which they are drawn


@dataclasses.dataclass(frozen=True)
class Settings:
  """Generator settings; all of them name the cache file."""
  seed: int = 0
  num_train: int = 96_000
  num_val: int = 2_000
  num_test: int = 2_000
  min_length: int = 500
  max_length: int = 2_000
  max_depth: int = 10
  max_args: int = 10

  def size(self, split: str) -> int:
    return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

  def check(self) -> None:
    if min(self.num_train, self.num_val, self.num_test) < 1:
      raise UserError("ListOps needs at least one example per split (data.num_train, "
                      "data.num_val, data.num_test)")
    if not 0 <= self.min_length < self.max_length - 1:
      raise UserError(f"ListOps lengths lie strictly between data.min_length and "
                      f"data.max_length; got {self.min_length} and {self.max_length}")
    if self.max_depth < 2 or self.max_args < 2:
      raise UserError(f"ListOps needs data.max_depth >= 2 and data.max_args >= 2; got "
                      f"{self.max_depth} and {self.max_args}")


class _TooLong(Exception):
  pass


def median(values: list[int]) -> int:
  """int(np.median(values)) for non-negative integers, as LRA's MED."""
  s = sorted(values)
  m = len(s) // 2
  return s[m] if len(s) % 2 else (s[m - 1] + s[m]) // 2


def apply(op: int, values: list[int]) -> int:
  """The value of operator OPERATORS[op] over `values`."""
  if op == 0:
    return max(values)
  if op == 1:
    return min(values)
  if op == 2:
    return median(values)
  return sum(values) % 10


def _tree(rnd, depth: int, s: Settings, out: list[int]) -> int:
  """Appends one random tree's tokens to `out` and returns its value; _TooLong once `out`
  reaches s.max_length tokens."""
  if depth >= s.max_depth or rnd() > VALUE_P:
    value = int(rnd() * 10)
    out.append(DIGIT0 + value)
    if len(out) >= s.max_length:
      raise _TooLong
    return value
  op = int(rnd() * len(OPERATORS))
  count = 2 + int(rnd() * (s.max_args - 1))
  out.append(OP0 + op)
  values = [_tree(rnd, depth + 1, s, out) for _ in range(count)]
  out.append(END_ID)
  if len(out) >= s.max_length:
    raise _TooLong
  return apply(op, values)


def generate(s: Settings) -> dict[str, tuple[list[bytes], list[int]]]:
  """split -> (token ids, one bytes object per example; labels): the whole data set, drawn
  from `s.seed`."""
  s.check()
  rnd = random.Random(s.seed).random
  seen: set[bytes] = set()
  out = {}
  for split in SPLITS:
    tokens, labels = [], []
    while len(tokens) < s.size(split):
      seq: list[int] = []
      try:
        value = _tree(rnd, 1, s, seq)
      except _TooLong:
        continue
      if len(seq) <= s.min_length:
        continue
      key = bytes(seq)
      if key in seen:
        continue
      seen.add(key)
      tokens.append(key)
      labels.append(value)
    out[split] = (tokens, labels)
  return out


def to_text(tokens) -> str:
  """Token ids (padding dropped) -> "[MAX 2 9 ] ..."."""
  return " ".join(VOCAB[t] for t in tokens if t != PAD)


def cache_path(s: Settings) -> Path:
  return data_root() / "listops" / (
      f"v{VERSION}-seed{s.seed}-n{s.num_train}-{s.num_val}-{s.num_test}"
      f"-len{s.min_length}-{s.max_length}-depth{s.max_depth}-args{s.max_args}.npz")


def read_cache(path: Path, s: Settings) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """The arrays `load` saved for `s`, each read whole; a CorruptFile (or the error of the zip
  or npy reader) when the file is not whole or does not hold the shapes of `s`."""
  z = load_npz(path, [f"{split}_{part}" for split in SPLITS for part in ("tokens", "labels")])
  out = {}
  for split in SPLITS:
    x, y, n = z[f"{split}_tokens"], z[f"{split}_labels"], s.size(split)
    if (x.dtype, x.shape, y.dtype, y.shape) != (np.uint8, (n, s.max_length - 1), np.int32, (n,)):
      raise CorruptFile(f"{split}: tokens {x.dtype} {x.shape}, labels {y.dtype} {y.shape}; expected "
                        f"uint8 {(n, s.max_length - 1)}, int32 {(n,)}")
    out[split] = (x, y)
  return out


def load(s: Settings, say=print) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """split -> (tokens uint8 [n, max_length - 1] padded with 0, labels int32 [n]), generated
  on first use and cached (a broken cache file is moved aside and generated again)."""
  path = cache_path(s)
  data = load_guarded(path, lambda p: read_cache(p, s))
  if data is None:
    t = time.perf_counter()
    say(f"generating ListOps ({s.num_train:,}/{s.num_val:,}/{s.num_test:,} examples of "
        f"{s.min_length + 1:,}-{s.max_length - 1:,} tokens) into {path}")
    arrays = {}
    for split, (tokens, labels) in generate(s).items():
      x = np.zeros((len(tokens), s.max_length - 1), np.uint8)
      for row, seq in zip(x, tokens):
        row[:len(seq)] = np.frombuffer(seq, np.uint8)
      arrays[f"{split}_tokens"] = x
      arrays[f"{split}_labels"] = np.asarray(labels, np.int32)
    save_npz(path, arrays)
    say(f"generated ListOps in {time.perf_counter() - t:.0f} s")
    data = {split: (arrays[f"{split}_tokens"], arrays[f"{split}_labels"]) for split in SPLITS}
  return data


def bucketed(length: int, bucket: int) -> int:
  """`length` rounded up to a multiple of `bucket`."""
  return -(-length // bucket) * bucket


class ListOpsData(ArrayData):
  """The ListOps data set of `config.data` (fields: module docstring): uint8 tokens, plain
  evaluation, the batching of `ArrayData`."""

  def __init__(self, config):
    d = config.data
    s = Settings(seed=int(d.seed), num_train=int(d.num_train), num_val=int(d.num_val),
                 num_test=int(d.num_test), min_length=int(d.min_length),
                 max_length=int(d.max_length), max_depth=int(d.max_depth),
                 max_args=int(d.max_args))
    s.check()
    if int(d.bucket) < 1:
      raise UserError(f"data.bucket must be a positive integer; got {d.bucket}")
    seq_len = bucketed(s.max_length - 1, int(d.bucket))
    splits = {k: (np.pad(x, ((0, 0), (0, seq_len - x.shape[1]))), y)
              for k, (x, y) in load(s).items()}
    super().__init__(config, splits, NUM_CLASSES, ("val", "test"), x_dtype=np.uint8)
    self.info.update(vocab_size=len(VOCAB), seq_len=seq_len)
