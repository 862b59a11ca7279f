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

Each file is written with its sha256 beside it (NAME.sha256) and checked when loaded
(data/cache.py: `load_guarded`). A broken one (truncated, zeroed, garbled) is moved aside with
one warning and made again: tokenizer.json from the config, a model or vocabulary by training
it again on the training split, which is deterministic (one thread, every line: the same
bytes, also in another process). Should the retrained file differ from the recorded sha256
of the lost one (another sentencepiece version, other training data), loading refuses with
one line: the run's checkpoints were trained with the lost one.
"""

from __future__ import annotations

import collections
import io
import json
import re
from pathlib import Path
from typing import Iterable, Protocol, Sequence

from metricattn.data.cache import (CorruptFile, checksum_path, load_guarded, recorded_sha256, save_checked,
                                   sha256)
from metricattn.errors import UserError

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
    specials = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
    if specials != (PAD, UNK, BOS, EOS):
      raise CorruptFile(f"special ids {specials}, not {(PAD, UNK, BOS, EOS)}")

  def encode(self, text: str) -> list[int]:
    return self.sp.encode(text)

  def decode(self, ids: Sequence[int]) -> str:
    return self.sp.decode([int(i) for i in ids])


_TOO_FEW_PIECES = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


class VocabTooSmall(UserError):
  """SentencePiece's refusal of fewer pieces than the training text has characters (it keeps
  every character: character_coverage 1.0) and special ids: one line naming
  data.vocab_size, the least it takes (`needed`) and the text (`what`)."""

  def __init__(self, vocab_size: int, needed: int,
               what: str = "the training split of this corpus"):
    self.vocab_size, self.needed = vocab_size, needed
    super().__init__(
        f"data.vocab_size={vocab_size} is too small for {what}: SentencePiece needs a piece "
        f"for each of its characters and the special ids, at least {needed}; set "
        f"--config.data.vocab_size={needed} or more")


def train_sentencepiece(lines: Iterable[str], vocab_size: int) -> bytes:
  """A unigram model trained on `lines`, as the bytes of a .model file (deterministic: one
  thread, every line used, so the same lines give the same bytes). VocabTooSmall when
  `vocab_size` is below what the lines' characters need."""
  import sentencepiece as spm
  buf = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
        pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS, num_threads=1, minloglevel=2)
  except RuntimeError as e:
    found = _TOO_FEW_PIECES.search(str(e))
    if found is None:
      raise
    raise VocabTooSmall(vocab_size, int(found[2])) from None
  return buf.getvalue()


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
    """The vocabulary file at `path` (one token a line, each line ending with a newline); a
    CorruptFile (or UnicodeDecodeError) when it is not one `vocab_file` wrote."""
    text = path.read_bytes().decode("utf-8")
    tokens = text.split("\n")[:-1]
    if not text.endswith("\n") or tuple(tokens[:len(SPECIALS)]) != SPECIALS:
      raise CorruptFile(f"not a vocabulary: it must start with the lines {', '.join(SPECIALS)} "
                        "and end with a newline")
    if "" in tokens or len(set(tokens)) != len(tokens):
      raise CorruptFile("not a vocabulary: an empty or repeated line")
    return cls(tokens)

  def encode(self, text: str) -> list[int]:
    return [self.ids.get(w, UNK) for w in split_words(text)]

  def decode(self, ids: Sequence[int]) -> str:
    return join_words([self.tokens[int(i)] for i in ids])


def vocab_file(tokens: Sequence[str]) -> bytes:
  """The bytes of a vocabulary file: one token a line, in id order."""
  return ("\n".join(tokens) + "\n").encode("utf-8")


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


def _read_spec(path: Path) -> dict:
  """The record in tokenizer.json; a CorruptFile (or a JSON error) when it is not one."""
  saved = json.loads(path.read_bytes().decode("utf-8"))
  if not isinstance(saved, dict) or saved.get("kind") not in KINDS:
    raise CorruptFile(f"not a tokenizer record: {str(saved)[:60]!r}")
  return saved


def _train(kind: str, spec: dict, lines: list[str]) -> bytes:
  if kind == "sentencepiece":
    return train_sentencepiece(lines, spec["vocab_size"])
  return vocab_file(build_word_vocab(lines, spec["min_freq"]))


def load_or_build(directory: Path, spec: dict,
                  texts: dict[str, list[str]]) -> dict[str, Tokenizer]:
  """Tokenizers by name ("joint" or each language of `texts`), loaded from `directory` or
  built from the training `texts` (name -> lines) and saved there.

  The caller passes `texts` = {"joint": src + tgt lines} or {lang: lines, ...}. A broken
  file is moved aside and made again (module docstring); a model or vocabulary made again
  must have the sha256 recorded for the lost one, else a one-line UserError.
  """
  directory.mkdir(parents=True, exist_ok=True)
  meta_path = directory / "tokenizer.json"
  saved = load_guarded(meta_path, _read_spec, "writing it again from the config")
  if saved is not None and saved != spec:
    raise UserError(f"the tokenizer saved in {directory} was built as {saved}, but the "
                    f"config asks for {spec}; use the saved settings or a new workdir")
  kind = spec["kind"]
  load = SentencePieceTokenizer if kind == "sentencepiece" else WordTokenizer.load
  out: dict[str, Tokenizer] = {}
  for name, lines in texts.items():
    path = _file(directory, kind, name)
    tokenizer = load_guarded(path, load, "training it again from the training split")
    if tokenizer is None:
      data = _train(kind, spec, lines)
      want = recorded_sha256(path)  # the lost file's, when it was lost
      if want is not None and sha256(data) != want:
        raise UserError(
            f"{path} is missing or was corrupt (see {path.name}.corrupt-* beside it), and "
            f"training it again gives another tokenizer (sha256 {sha256(data)[:16]}..., not the "
            f"recorded {want[:16]}... in {checksum_path(path).name}; another sentencepiece "
            "version or other training data?) than the one this run's checkpoints use: restore the file from a copy "
            "of the run, or start the run again in a new workdir")
      save_checked(path, data)
      tokenizer = load(path)
    out[name] = tokenizer
  if saved is None:
    save_checked(meta_path, (json.dumps(spec) + "\n").encode())
  return out
