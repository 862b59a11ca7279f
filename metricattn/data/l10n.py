"""English -> another language from Debian's message catalogues (`data.name = "debian_l10n"`).

The gettext catalogues that Debian packages install (/usr/share/locale/LANG/LC_MESSAGES/*.mo)
hold English messages with translations made by people: a real, offline parallel corpus.
Reading it:
  - every readable `.mo` of the language (the standard library's gettext; a file listed
    twice through a symlink is read once; a catalogue gettext cannot parse is skipped and
    counted);
  - singular messages only (plural forms are left out), the message context dropped;
  - the same normalisation on both sides (`normalize_pair`): gettext accelerator markers go
    ("_Open" / "ö_ffnen", "&Save"), format placeholders ("%s", "%1$d", "%(name)s", "{name}",
    "{0}") become the one token PLACEHOLDER, "%%" becomes "%", whitespace and newlines
    collapse;
  - pairs whose English has min_words..max_words words (after normalisation);
  - one translation per English text (the most frequent, ties to the alphabetically first),
    and no pair whose source equals its target (ignoring case);
  - split by a stable hash of the English text (`split_of`), so a pair never moves split
    when packages are added or removed.
The corpus depends on what is installed: `fingerprint` (pair count, a hash of the pairs and
the Debian packages with their versions) goes into every run's config (`data.corpus`, from
configs/l10n_translation.py) and its report; loading refuses a corpus whose fingerprint
differs from the config's. configs/l10n_packages.txt lists the packages of the committed
results (`make l10n` installs them).

Batching, tokenisation (SentencePiece or words, as Multi30k) and BLEU references are those of
metricattn/data/translation.py. config.data fields (defaults of configs/l10n_translation.py):
  name          "debian_l10n"
  lang          target language code                                      "de"
  locale_dir    where the catalogues are                                  "/usr/share/locale"
  min_words, max_words   English words per pair                           3, 30
  val_permille, test_permille   shares of the hash space for val and test 30, 30
  corpus        the fingerprint the config was built with ("" = no check)
  tokenizer, vocab_size, min_freq, shared_vocab, max_len, tokenizer_dir, batch_size
                as for Multi30k (metricattn/data/translation.py)
"""

from __future__ import annotations

import collections
import functools
import gettext
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from metricattn.data.translation import ParallelData, tokenize_splits
from metricattn.errors import UserError

PLACEHOLDER = "{}"
SPLITS = ("train", "val", "test")
_PLACEHOLDERS = re.compile(
    r"%(?:\d+\$)?[-+ #0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|ll|[hlLqjzt])?[diouxXeEfFgGaAcspnm]"
    r"|%\(\w+\)[diouxXeEfFgGcrsa]"
    r"|\{\w*(?:![rsa])?(?::[^{}]*)?\}")
ACCELERATORS = "_&"


def normalize(text: str) -> str:
  """Placeholders -> PLACEHOLDER, "%%" -> "%", whitespace collapsed."""
  return " ".join(_PLACEHOLDERS.sub(PLACEHOLDER, text).replace("%%", "%").split())


def _accelerator(text: str, mark: str) -> int | None:
  """Where the message's only `mark` is, when a letter or digit follows it."""
  i = text.find(mark)
  return i if text.count(mark) == 1 and text[i + 1:i + 2].isalnum() else None


def normalize_pair(english: str, translation: str) -> tuple[str, str]:
  """A message and its translation -> plain text (see the module doc). An accelerator marker
  ("_Open" -> "ö_ffnen", "&Save") is the only "_" (or "&") of the message, before a letter or
  digit, when the translation has one too: both are removed, wherever they are in the word."""
  for mark in ACCELERATORS:
    i, j = _accelerator(english, mark), _accelerator(translation, mark)
    if i is not None and j is not None:
      english, translation = english[:i] + english[i + 1:], translation[:j] + translation[j + 1:]
  return normalize(english), normalize(translation)


def split_of(english: str, val_permille: int, test_permille: int) -> str:
  """"train", "val" or "test" from a hash of the English text alone."""
  slot = int(hashlib.sha256(english.encode("utf-8")).hexdigest()[:8], 16) % 1000
  return "val" if slot < val_permille else "test" if slot < val_permille + test_permille else "train"


def catalogue_dir(locale_dir: str | Path, lang: str) -> Path:
  return Path(locale_dir) / lang / "LC_MESSAGES"


def catalogue_files(locale_dir: str | Path, lang: str) -> list[Path]:
  """The language's `.mo` files, sorted, each real file once."""
  seen, out = set(), []
  for path in sorted(catalogue_dir(locale_dir, lang).glob("*.mo")):
    real = os.path.realpath(path)
    if real not in seen:
      seen.add(real)
      out.append(path)
  return out


def read_catalogue(path: Path) -> list[tuple[str, str]] | None:
  """(English, translation) of every singular message, or None when gettext cannot read it."""
  try:
    with open(path, "rb") as f:
      catalog = gettext.GNUTranslations(f)._catalog  # msgid -> msgstr; (msgid, n) for plurals
  except (OSError, UnicodeDecodeError, ValueError):
    return None
  return [(msgid.split("\x04")[-1], msgstr) for msgid, msgstr in catalog.items()
          if isinstance(msgid, str) and msgid and msgstr]


@functools.lru_cache(maxsize=4)
def read_corpus(locale_dir: str, lang: str, min_words: int,
                max_words: int) -> tuple[list[tuple[str, str]], list[Path], list[Path]]:
  """(pairs sorted by English, catalogues read, catalogues gettext could not read)."""
  if not 1 <= min_words <= max_words:
    raise UserError(f"need 1 <= data.min_words <= data.max_words; got {min_words}, {max_words}")
  files = catalogue_files(locale_dir, lang)
  if not files:
    raise UserError(f"no message catalogues for language {lang!r}: {catalogue_dir(locale_dir, lang)}"
                    " holds no .mo files; install the packages of configs/l10n_packages.txt "
                    "(`make l10n`) or set data.lang to a language that has catalogues")
  targets: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  read, unreadable = [], []
  for path in files:
    messages = read_catalogue(path)
    (read if messages is not None else unreadable).append(path)
    for english, translation in messages or ():
      english, translation = normalize_pair(english, translation)
      if min_words <= len(english.split()) <= max_words and translation:
        targets[english][translation] += 1
  pairs = []
  for english in sorted(targets):
    counts = targets[english]
    best = min(counts, key=lambda t: (-counts[t], t))
    if best.casefold() != english.casefold():
      pairs.append((english, best))
  return pairs, read, unreadable


def debian_packages(files: list[Path]) -> str:
  """"package=version ..." of the packages that installed `files` ("unknown" without dpkg)."""
  if not files or shutil.which("dpkg-query") is None:
    return "unknown"
  found = subprocess.run(["dpkg-query", "-S", *map(str, files)], capture_output=True, text=True)
  names = sorted({n.strip() for line in found.stdout.splitlines() if ": " in line
                  for n in line.split(": ")[0].split(",")})
  if not names:
    return "unknown"
  versions = subprocess.run(["dpkg-query", "-W", "-f", "${Package}=${Version}\\n", *names],
                            capture_output=True, text=True)
  return " ".join(sorted(versions.stdout.split())) or "unknown"


def pairs_sha256(pairs: list[tuple[str, str]]) -> str:
  """16 hex digits of the sha256 of the pairs: the part of the fingerprint that identifies them."""
  return hashlib.sha256("".join(f"{e}\t{t}\n" for e, t in pairs).encode("utf-8")).hexdigest()[:16]


def fingerprint(lang: str = "de", locale_dir: str = "/usr/share/locale", min_words: int = 3,
                max_words: int = 30) -> dict:
  """What identifies the corpus: pairs, sha256 (16 hex digits of the pairs), catalogues,
  unreadable catalogues and packages (with versions). Two results are comparable only when
  their fingerprints' `sha256` match."""
  pairs, read, unreadable = read_corpus(str(locale_dir), lang, int(min_words), int(max_words))
  return {"lang": lang, "pairs": len(pairs), "sha256": pairs_sha256(pairs),
          "catalogues": len(read), "unreadable": " ".join(p.name for p in unreadable),
          "packages": debian_packages(read)}


def corpus_splits(locale_dir: str, lang: str, min_words: int, max_words: int,
                  val_permille: int, test_permille: int,
                  batch_size: int) -> dict[str, tuple[list[str], list[str]]]:
  """split -> (English lines, target lines); a UserError when a split would be empty or the
  training split smaller than a batch."""
  pairs, _, _ = read_corpus(str(locale_dir), lang, int(min_words), int(max_words))
  out = {s: ([], []) for s in SPLITS}
  for english, translation in pairs:
    src, tgt = out[split_of(english, int(val_permille), int(test_permille))]
    src.append(english)
    tgt.append(translation)
  sizes = {s: len(src) for s, (src, _) in out.items()}
  if min(sizes.values()) == 0 or sizes["train"] < int(batch_size):
    raise UserError(f"only {len(pairs)} pairs in {catalogue_dir(locale_dir, lang)} "
                    f"({min_words}-{max_words} English words), split {sizes}: too few for "
                    f"the splits and a batch of {batch_size}; install more catalogues "
                    "(`make l10n`) or widen the word range")
  return out


def l10n_texts(d) -> dict[str, tuple[list[str], list[str]]]:
  """`corpus_splits` of config.data `d`, after checking the corpus's fingerprint."""
  if d.corpus and d.corpus.sha256:
    pairs, _, _ = read_corpus(str(d.locale_dir), d.lang, int(d.min_words), int(d.max_words))
    sha256 = pairs_sha256(pairs)  # not `fingerprint`: its package query is not needed here
    if sha256 != d.corpus.sha256:
      raise UserError(
          f"the catalogues in {catalogue_dir(d.locale_dir, d.lang)} ({d.min_words}-"
          f"{d.max_words} English words) give {len(pairs)} pairs (sha256 {sha256}), "
          f"not the corpus this config was made for ({d.corpus.pairs} pairs, sha256 "
          f"{d.corpus.sha256}); results on the two are not comparable: install the packages "
          "of configs/l10n_packages.txt, or rebuild the config on this machine (a new workdir)")
  return corpus_splits(d.locale_dir, d.lang, d.min_words, d.max_words, d.val_permille,
                       d.test_permille, d.batch_size)


class DebianL10nData(ParallelData):
  """English -> data.lang pairs of the installed catalogues (see the module docstring)."""

  def __init__(self, config, tokenizer_dir: str | Path | None = None):
    texts = l10n_texts(config.data)
    splits, src_tok, tgt_tok = tokenize_splits(config.data, texts, ("en", config.data.lang),
                                               tokenizer_dir)
    super().__init__(config, splits, src_tok.vocab_size, tgt_tok.vocab_size, tgt_tok.decode,
                     eval_splits=("val", "test"))
    self.tokenizers = {"src": src_tok, "tgt": tgt_tok}
