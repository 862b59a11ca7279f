"""Tokenizers for translation data: SentencePiece or a word-level vocabulary.

Both reserve the same special ids: 0 padding, 1 unknown, 2 BOS, 3 EOS. They are built once
from the training split and saved in a directory (the run's workdir); a later run with the
same directory loads them, never rebuilds them, and refuses a config that asks for another
kind of tokenizer than the one saved (`tokenizer.json` records how they were made).

  sentencepiece  a unigram SentencePiece model of `vocab_size` pieces (a soft limit on small
                 corpora), saved as spm_<name>.model
  word           words and punctuation (regex `\\w+|[^\\w\\s]`), case kept; a hyphen inside a
                 word is the token "@-@" (Moses style: "well-known" -> well @-@ known), so
                 a spaced hyphen ("rot - blau") stays spaced on decoding; words seen fewer
                 than `min_freq` times in training map to unknown. Saved as vocab_<name>.txt,
                 one token per line in id order (specials, then by count, ties alphabetical).

<name> is "joint" for one vocabulary shared by both languages, else the language code.
"""

from __future__ import annotations

import collections
import io
import json
import re
from pathlib import Path
from typing import Iterable, Protocol, Sequence

from metricattn.errors import UserError
from metricattn.fileio import write_atomic

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
KINDS = ("sentencepiece", "word")
_WORD = re.compile(r"@-@|\w+|[^\w\s]")
_INNER_HYPHEN = re.compile(r"(?<=\w)-(?=\w)")
HYPHEN = "@-@"  # the token of a hyphen inside a word


class Tokenizer(Protocol):
  vocab_size: int

  def encode(self, text: str) -> list[int]:
    """Text -> ids, without BOS or EOS."""

  def decode(self, ids: Sequence[int]) -> str:
    """Ids (no specials) -> detokenised text."""


# ---------------------------------------------------------------- SentencePiece

class SentencePieceTokenizer:

  def __init__(self, model_file: Path):
    import sentencepiece as spm
    self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
    self.vocab_size = self.sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    return self.sp.encode(text)

  def decode(self, ids: Sequence[int]) -> str:
    return self.sp.decode([int(i) for i in ids])


def train_sentencepiece(lines: Iterable[str], vocab_size: int, path: Path) -> None:
  """Trains a unigram model on `lines` and saves it to `path` (deterministic, one thread)."""
  import sentencepiece as spm
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size,
      model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
      pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS, num_threads=1, minloglevel=2)
  write_atomic(path, buf.getvalue())


# ---------------------------------------------------------------- word level

def split_words(text: str) -> list[str]:
  return _WORD.findall(_INNER_HYPHEN.sub(f" {HYPHEN} ", text))


def join_words(words: Sequence[str]) -> str:
  """Inverse of split_words for ordinary text: no space before punctuation, none around
  apostrophes and word-internal hyphens (@-@); a spaced hyphen keeps its spaces."""
  text = " ".join(words)
  text = re.sub(r" ([.,!?;:)\]])", r"\1", text)
  text = re.sub(r"([(\[]) ", r"\1", text)
  text = re.sub(f" ?{HYPHEN} ?", "-", text)
  return re.sub(r" ?' ?", "'", text)


class WordTokenizer:

  def __init__(self, tokens: Sequence[str]):
    if tuple(tokens[:len(SPECIALS)]) != SPECIALS:
      raise UserError(f"word vocabulary must start with {SPECIALS}")
    self.tokens = list(tokens)
    self.ids = {t: i for i, t in enumerate(self.tokens)}
    self.vocab_size = len(self.tokens)

  @classmethod
  def load(cls, path: Path) -> "WordTokenizer":
    return cls(path.read_text(encoding="utf-8").split("\n")[:-1])

  def encode(self, text: str) -> list[int]:
    return [self.ids.get(w, UNK) for w in split_words(text)]

  def decode(self, ids: Sequence[int]) -> str:
    return join_words([self.tokens[int(i)] for i in ids])


def build_word_vocab(lines: Iterable[str], min_freq: int) -> list[str]:
  """Specials, then words with count >= min_freq by descending count, ties alphabetical."""
  counts = collections.Counter(w for line in lines for w in split_words(line))
  words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
  return list(SPECIALS) + [w for w in words if w not in SPECIALS]


# ---------------------------------------------------------------- build or load

def tokenizer_spec(kind: str, size: int, shared: bool) -> dict:
  """What `tokenizer.json` records: kind, vocab_size or min_freq, shared."""
  if kind not in KINDS:
    raise UserError(f"unknown data.tokenizer {kind!r}; allowed: {', '.join(KINDS)}")
  key = "vocab_size" if kind == "sentencepiece" else "min_freq"
  return {"kind": kind, key: int(size), "shared": bool(shared)}


def _file(directory: Path, kind: str, name: str) -> Path:
  return directory / (f"spm_{name}.model" if kind == "sentencepiece" else f"vocab_{name}.txt")


def load_or_build(directory: Path, spec: dict,
                  texts: dict[str, list[str]]) -> dict[str, Tokenizer]:
  """Tokenizers by name ("joint" or each language of `texts`), loaded from `directory` or
  built from the training `texts` (name -> lines) and saved there.

  The caller passes `texts` = {"joint": src + tgt lines} or {lang: lines, ...}.
  """
  directory.mkdir(parents=True, exist_ok=True)
  meta_path = directory / "tokenizer.json"
  if meta_path.exists():
    saved = json.loads(meta_path.read_text())
    if saved != spec:
      raise UserError(f"the tokenizer saved in {directory} was built as {saved}, but the "
                      f"config asks for {spec}; use the saved settings or a new workdir")
  kind = spec["kind"]
  out: dict[str, Tokenizer] = {}
  for name, lines in texts.items():
    path = _file(directory, kind, name)
    if not path.exists():
      if kind == "sentencepiece":
        train_sentencepiece(lines, spec["vocab_size"], path)
      else:
        tokens = build_word_vocab(lines, spec["min_freq"])
        write_atomic(path, ("\n".join(tokens) + "\n").encode("utf-8"))
    is_spm = kind == "sentencepiece"
    out[name] = SentencePieceTokenizer(path) if is_spm else WordTokenizer.load(path)
  if not meta_path.exists():
    write_atomic(meta_path, (json.dumps(spec) + "\n").encode())
  return out
