"""Parallel (translation) data: Multi30k Task 1 and the batching shared with the synthetic task.

Batches are dicts of int32 NumPy arrays (id 0 is padding):
  src      [batch, src_len]  source tokens, then EOS
  tgt_in   [batch, tgt_len]  BOS, then target tokens         (decoder input)
  tgt_out  [batch, tgt_len]  target tokens, then EOS         (what is predicted)
Evaluation batches add `weight` (float32 [batch], 0 on rows that pad the last chunk to
config.eval.batch_size). Training batch `step` is a pure function of (config.seed, step).
src_len and tgt_len are fixed per run: the longest training sentence plus its special token,
capped by config.data.max_len; longer sentences (any split) are cut to fit.

Length buckets (config.data.buckets = K; 0 when absent, as in runs older than it): with K = 0
every batch is src_len x tgt_len wide. With K > 0 each side has the widths
`bucket_widths(src_len, K)` and `bucket_widths(tgt_len, K)`: ceil(i * len / K) for i = 1..K,
each rounded up to a multiple of 8 and capped at len (duplicates dropped; the last is len).
A batch is cut to the smallest width of each side that holds its longest row: only padding
is cut, the tokens are unchanged. Training batch `step` holds the same examples as with
K = 0; each evaluation split is sorted once, stably, by (source width, target width), so
that its chunks pad little, and `references(split)` follows that order.

Besides the contract in metricattn/data/__init__.py a parallel dataset offers, for BLEU:
  references(split) -> list[str]   raw target sentences, in eval_batches order
  detokenize(ids) -> str           target ids -> text; stops at the first EOS, drops specials
info: src_vocab_size, tgt_vocab_size, pad_id, bos_id, eos_id, src_len, tgt_len, num_train,
num_truncated (training pairs cut to fit).

Multi30k (`config.data.name = "multi30k"`): Task 1 EN-DE from the published plain-text files
(github.com/multi30k/dataset, data/task1/raw): train.{en,de} (29,000 pairs), val.{en,de}
(1,014), test_2016_flickr.{en,de} (1,000), each optionally gzipped (`.gz`). Evaluated splits:
"val" and "test" (test2016). The tokenizer is trained on the training split and saved in the
tokenizer directory: `Multi30kData(config, tokenizer_dir=...)` or config.data.tokenizer_dir;
the trainer should pass the run's workdir so that resume and evaluation reuse it (a broken
tokenizer file there is moved aside and trained again: tokenizers.py).

config.data fields read for multi30k (suggested defaults):
  name           "multi30k"
  data_dir       directory of the raw files                         "data/multi30k"
  download       fetch missing files from `url` (needs network)     False
  url            base URL of the raw files (read if download)
                 "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
  src_lang       "en"
  tgt_lang       "de"
  tokenizer      "sentencepiece" or "word" (the reference's)        "sentencepiece"
  vocab_size     SentencePiece pieces (sentencepiece only)          8000
  min_freq       word vocabulary minimum count (word only)          2
  shared_vocab   one vocabulary for both languages                  True (sentencepiece) /
                                                                    False (word, reference)
  max_len        most tokens per sentence incl. BOS/EOS             256 (the reference's)
  tokenizer_dir  where the tokenizer is saved ("" = constructor)    "" (trainer: workdir)
  batch_size     training sentence pairs per step                   128
  buckets        length buckets per side, 0 = off (see above)       0
config.eval.batch_size: sentence pairs per evaluation batch (e.g. 128).
"""

from __future__ import annotations

import gzip
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from metricattn.data import tokenizers as tok
from metricattn.data.sampling import batch_indices, eval_chunks
from metricattn.errors import UserError
from metricattn.fileio import write_atomic

PAD, BOS, EOS = tok.PAD, tok.BOS, tok.EOS
MULTI30K_FILES = {"train": "train", "val": "val", "test": "test_2016_flickr"}
MULTI30K_SIZES = {"train": 29_000, "val": 1_014, "test": 1_000}  # sentence pairs per split
MULTI30K_SOURCE = "https://github.com/multi30k/dataset/tree/master/data/task1/raw"


def pad_rows(rows: Sequence[Sequence[int]], length: int) -> np.ndarray:
  """Token lists (already at most `length` long) -> int32 [n, length], 0-padded."""
  out = np.zeros((len(rows), length), np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


def make_arrays(src: list[list[int]], tgt: list[list[int]], src_len: int,
                tgt_len: int) -> dict[str, np.ndarray]:
  """Token lists -> src (+EOS), tgt_in (BOS+), tgt_out (+EOS), cut to the given lengths."""
  return {"src": pad_rows([s[:src_len - 1] + [EOS] for s in src], src_len),
          "tgt_in": pad_rows([[BOS] + t[:tgt_len - 1] for t in tgt], tgt_len),
          "tgt_out": pad_rows([t[:tgt_len - 1] + [EOS] for t in tgt], tgt_len)}


def bucket_widths(length: int, buckets: int) -> np.ndarray:
  """The padded widths of a side at most `length` wide (module docstring), ascending."""
  if buckets == 0:
    return np.array([length])
  return np.unique([min(length, (-(-i * length // buckets) + 7) // 8 * 8)
                    for i in range(1, buckets + 1)])


def row_widths(a: np.ndarray) -> np.ndarray:
  """The width each 0-padded row needs: one past its last nonzero token (0 if empty)."""
  nonzero = a != PAD
  return np.where(nonzero.any(1), a.shape[1] - np.argmax(nonzero[:, ::-1], 1), 0)


class ParallelData:
  """Batching, evaluation and BLEU references for tokenised sentence pairs.

  Args:
    config: reads seed, data.batch_size, data.max_len, data.buckets (0 if absent),
      eval.batch_size.
    splits: name -> (source ids, target ids, raw target texts); must include "train".
    src_vocab_size, tgt_vocab_size: vocabulary sizes (specials included).
    detok: target ids without specials -> text.
    eval_splits: the splits evaluated during training.
  """

  def __init__(self, config, splits: dict[str, tuple[list, list, list[str]]],
               src_vocab_size: int, tgt_vocab_size: int,
               detok: Callable[[Sequence[int]], str], eval_splits: tuple[str, ...]):
    self.seed = int(config.seed)
    self.batch_size = int(config.data.batch_size)
    self.eval_batch_size = int(config.eval.batch_size)
    max_len = int(config.data.max_len)
    if max_len < 2:
      raise UserError(f"data.max_len must be at least 2 (a token plus BOS/EOS); got {max_len}")
    train_src, train_tgt, _ = splits["train"]
    if self.batch_size > len(train_src):
      raise UserError(f"data.batch_size {self.batch_size} exceeds the {len(train_src)} "
                      "training pairs")
    src_len = min(max_len, 1 + max(map(len, train_src)))
    tgt_len = min(max_len, 1 + max(map(len, train_tgt)))
    self.arrays = {k: make_arrays(s, t, src_len, tgt_len) for k, (s, t, _) in splits.items()}
    self.texts = {k: list(texts) for k, (_, _, texts) in splits.items()}
    self.buckets = int(config.data.get("buckets", 0))
    if self.buckets < 0:
      raise UserError(f"data.buckets must be an integer >= 0; got {self.buckets}")
    self.widths = {"src": bucket_widths(src_len, self.buckets),
                   "tgt": bucket_widths(tgt_len, self.buckets)}
    if self.buckets:  # evaluation splits sorted by their rows' bucket widths
      for k, a in self.arrays.items():
        if k != "train":
          w = self.row_buckets(a)
          order = np.lexsort((w["tgt"], w["src"]))
          self.arrays[k] = {name: v[order] for name, v in a.items()}
          self.texts[k] = [self.texts[k][i] for i in order]
    self.detok = detok
    self.eval_splits = tuple(eval_splits)
    truncated = sum(len(s) >= src_len or len(t) >= tgt_len for s, t in zip(train_src, train_tgt))
    self.info = {"src_vocab_size": src_vocab_size, "tgt_vocab_size": tgt_vocab_size,
                 "pad_id": PAD, "bos_id": BOS, "eos_id": EOS, "src_len": src_len,
                 "tgt_len": tgt_len, "num_train": len(train_src), "num_truncated": truncated}

  @property
  def splits(self) -> tuple[str, ...]:
    """Every split held (train and the evaluated ones), for `metricattn.evaluate`."""
    return tuple(self.arrays)

  def row_buckets(self, a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """side -> the bucket width each row of arrays `a` needs."""
    need = {"src": row_widths(a["src"]),
            "tgt": np.maximum(row_widths(a["tgt_in"]), row_widths(a["tgt_out"]))}
    return {side: self.widths[side][np.searchsorted(self.widths[side], n)]
            for side, n in need.items()}

  def fit(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`batch` cut to the smallest bucket widths that hold its rows (as is without buckets)."""
    if not self.buckets:
      return batch
    w = {side: int(v.max()) for side, v in self.row_buckets(batch).items()}
    return {k: v[:, :w["src" if k == "src" else "tgt"]] if v.ndim == 2 else v
            for k, v in batch.items()}

  def train_batch(self, step: int) -> dict[str, np.ndarray]:
    a = self.arrays["train"]
    idx = batch_indices(len(a["src"]), self.batch_size, self.seed, step)
    return self.fit({k: v[idx] for k, v in a.items()})

  def eval_batches(self, split: str):
    a = self.arrays[split]
    n = self.eval_batch_size
    for start, stop in eval_chunks(len(a["src"]), n):
      batch = {k: np.zeros((n, v.shape[1]), np.int32) for k, v in a.items()}
      for k, v in a.items():
        batch[k][:stop - start] = v[start:stop]
      batch["weight"] = (np.arange(n) < stop - start).astype(np.float32)
      yield self.fit(batch)

  def references(self, split: str) -> list[str]:
    return self.texts[split]

  def detokenize(self, ids: Sequence[int]) -> str:
    out = []
    for i in ids:
      i = int(i)
      if i == EOS:
        break
      if i not in (PAD, BOS):
        out.append(i)
    return self.detok(out)


# ---------------------------------------------------------------- Multi30k files

def _find(data_dir: Path, name: str) -> Path | None:
  for path in (data_dir / name, data_dir / f"{name}.gz"):
    if path.exists():
      return path
  return None


def read_lines(path: Path) -> list[str]:
  """One sentence per line (utf-8, optionally gzipped), trailing whitespace stripped."""
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rt", encoding="utf-8") as f:
    return [line.rstrip() for line in f]


def download_multi30k(data_dir: Path, names: list[str], url: str) -> None:
  """Fetches `name.gz` for each name into data_dir (only when config.data.download)."""
  data_dir.mkdir(parents=True, exist_ok=True)
  for name in names:
    target = data_dir / f"{name}.gz"
    try:
      with urllib.request.urlopen(url.rstrip("/") + f"/{name}.gz", timeout=60) as r:
        data = r.read()
    except OSError as e:
      raise UserError(f"could not download Multi30k file {name}.gz from {url} ({e}); put "
                      f"the files in {data_dir} by hand") from None
    write_atomic(target, data)


def multi30k_texts(d, langs: tuple[str, str]) -> dict[str, tuple[list[str], list[str]]]:
  """split -> (source lines, target lines) from config.data `d`; downloads if allowed."""
  data_dir = Path(d.data_dir)
  names = [f"{base}.{lang}" for base in MULTI30K_FILES.values() for lang in langs]
  missing = [n for n in names if _find(data_dir, n) is None]
  if missing and d.download:
    download_multi30k(data_dir, missing, d.url)
    missing = [n for n in names if _find(data_dir, n) is None]
  if missing:
    raise UserError(
        f"Multi30k files missing in {data_dir}: {', '.join(missing)}; put the Task 1 raw "
        f"files there (plain or .gz, from {MULTI30K_SOURCE}) or set data.download=True "
        "when online")
  out = {}
  for split, base in MULTI30K_FILES.items():
    src, tgt = (read_lines(_find(data_dir, f"{base}.{lang}")) for lang in langs)
    if len(src) != len(tgt):
      raise UserError(f"Multi30k {split} files in {data_dir} do not pair up: {len(src)} "
                      f"{langs[0]} lines, {len(tgt)} {langs[1]} lines")
    out[split] = (src, tgt)
  return out


def tokenize_splits(d, texts: dict[str, tuple[list[str], list[str]]], langs: tuple[str, str],
                    tokenizer_dir: str | Path | None = None):
  """(split -> (source ids, target ids, target texts), source tokenizer, target tokenizer)
  from config.data `d`; the tokenizer is trained on the training texts and saved in
  `tokenizer_dir` (or d.tokenizer_dir), or loaded from there."""
  tokenizer_dir = tokenizer_dir or d.tokenizer_dir
  if not tokenizer_dir:
    raise UserError(f"{d.name} needs a directory to save its tokenizer: set "
                    "data.tokenizer_dir (the run's workdir)")
  if d.vocab_size < len(tok.SPECIALS) + 1 or d.min_freq < 1:
    raise UserError(f"need data.vocab_size > {len(tok.SPECIALS)} and data.min_freq >= 1; "
                    f"got {d.vocab_size}, {d.min_freq}")
  size = d.vocab_size if d.tokenizer == "sentencepiece" else d.min_freq
  spec = tok.tokenizer_spec(d.tokenizer, size, d.shared_vocab)
  train_src, train_tgt = texts["train"]
  corpus = ({"joint": train_src + train_tgt} if d.shared_vocab
            else {langs[0]: train_src, langs[1]: train_tgt})
  tokenizers = tok.load_or_build(Path(tokenizer_dir), spec, corpus)
  src_tok = tokenizers["joint" if d.shared_vocab else langs[0]]
  tgt_tok = tokenizers["joint" if d.shared_vocab else langs[1]]
  splits = {k: ([src_tok.encode(s) for s in src], [tgt_tok.encode(t) for t in tgt], tgt)
            for k, (src, tgt) in texts.items()}
  return splits, src_tok, tgt_tok


class Multi30kData(ParallelData):
  """Multi30k Task 1 (see module docstring). `tokenizer_dir` overrides data.tokenizer_dir."""

  def __init__(self, config, tokenizer_dir: str | Path | None = None):
    d = config.data
    langs = (d.src_lang, d.tgt_lang)
    splits, src_tok, tgt_tok = tokenize_splits(d, multi30k_texts(d, langs), langs,
                                               tokenizer_dir)
    super().__init__(config, splits, src_tok.vocab_size, tgt_tok.vocab_size,
                     tgt_tok.decode, eval_splits=("val", "test"))
    self.tokenizers = {"src": src_tok, "tgt": tgt_tok}
