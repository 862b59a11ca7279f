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
  - split without near-duplicates across splits (`assign_splits`, rule SPLIT_RULE): each
    text has a normalised key (`split_key`: placeholders of every style removed, casefolded,
    every character that is not a letter or digit a space, whitespace collapsed); a pair's
    own split comes from a stable hash of its English key (`split_of`), and pairs linked by
    a shared English key or a shared target key (directly or through other pairs) all go to
    the first of train, val, test that any of them hashes to. So no val or test pair has an
    English or target key of a training pair, and no test pair one of a val pair
    (`split_leaks` counts them). A pair changes split only when pairs that share its keys
    come or go (or its chosen translation changes), and then, when pairs come, only
    towards train.
The corpus depends on what is installed: `fingerprint` (pair count, a hash of the split rule
and the pairs, the Debian packages with their versions) goes into every run's config
(`data.corpus`, from configs/l10n_translation.py) and its report; loading refuses a corpus
whose fingerprint differs from the config's, or that the config split by another rule.
configs/l10n_packages.txt lists the packages of the committed results (`make l10n` installs
them).

Batching, tokenisation (SentencePiece or words, as Multi30k) and BLEU references are those of
metricattn/data/translation.py. config.data fields (defaults of configs/l10n_translation.py):
  name          "debian_l10n"
  lang          target language code                                      "de"
  locale_dir    where the catalogues are                                  "/usr/share/locale"
  min_words, max_words   English words per pair                           3, 30
  val_permille, test_permille   shares of the hash space for val and test 30, 30
  train_pairs   training pairs kept (a fixed sample; 0 = all): smoke tests  0
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
import unicodedata
from pathlib import Path

from metricattn.data.tokenizers import VocabTooSmall
from metricattn.data.translation import ParallelData, tokenize_splits
from metricattn.errors import UserError

PLACEHOLDER = "{}"
SPLITS = ("train", "val", "test")
# The version of the split rule, recorded in the fingerprint (`data.corpus.split`) and hashed
# into its sha256; before it (no `split` field) pairs were split by a hash of the raw English
# text, and near-duplicates crossed splits (issue 27).
SPLIT_RULE = "normalised-v2"
OLD_SPLIT_RULE = "english-v1"
_PLACEHOLDERS = re.compile(
    r"%(?:\d+\$)?[-+ #0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|ll|[hlLqjzt])?[diouxXeEfFgGaAcspnm]"
    r"|%\(\w+\)[diouxXeEfFgGcrsa]"
    r"|\{\w*(?:![rsa])?(?::[^{}]*)?\}")
ACCELERATORS = "_&"
# Left in the text by `normalize`, removed from keys: GCC's diagnostic directives (%qD, %q#T,
# %<, %>, %L, ...), which are not printf's.
_KEY_DIRECTIVES = re.compile(r"%[-+#0'qQ]*[A-Za-z<>]")
_NOT_ALNUM = re.compile(r"[\W_]+")


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


def split_key(text: str) -> str:
  """The normalised key of a (normalised) text that the split hashes and compares: format
  placeholders of every style removed (printf's "%s", "%1$d", "%(name)s", Python's "{}",
  "{name}", "{0}", GCC's "%qD", "%<", "%>"), NFKC, casefolded, every character that is not a
  letter or digit (punctuation, symbols, "_") a space, whitespace collapsed.
  "Cannot open '%s'." and "cannot open {}" have the same key, "cannot open"."""
  text = _KEY_DIRECTIVES.sub(" ", _PLACEHOLDERS.sub(" ", text.replace(PLACEHOLDER, " ")))
  text = unicodedata.normalize("NFKC", text).casefold()
  return " ".join(_NOT_ALNUM.sub(" ", text).split())


def _split_of_key(key: str, val_permille: int, test_permille: int) -> str:
  slot = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 1000
  return "val" if slot < val_permille else "test" if slot < val_permille + test_permille else "train"


def split_of(english: str, val_permille: int, test_permille: int) -> str:
  """"train", "val" or "test" from a hash of the English text's key (`split_key`) alone: a
  pair's own split, before `assign_splits` moves linked pairs together."""
  return _split_of_key(split_key(english), val_permille, test_permille)


def assign_splits(pairs: list[tuple[str, str]], val_permille: int,
                  test_permille: int) -> list[str]:
  """The split of each pair (rule SPLIT_RULE): pairs linked by a shared English key or a
  shared target key (`split_key`), directly or through other pairs, form one group, and the
  whole group goes to the first of train, val, test that any of its pairs' `split_of` gives.
  So a pair whose target (or English) key is a training pair's is in training, and no test
  pair shares a key with a val pair."""
  parent = list(range(len(pairs)))

  def root(i: int) -> int:
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  first: dict[tuple[str, str], int] = {}
  rank: dict[int, int] = {}
  own = []  # each pair's own split, as an index into SPLITS
  for i, (english, target) in enumerate(pairs):
    english_key = split_key(english)
    own.append(SPLITS.index(_split_of_key(english_key, val_permille, test_permille)))
    for key in (("en", english_key), ("target", split_key(target))):
      a, b = root(i), root(first.setdefault(key, i))
      if a != b:
        parent[max(a, b)] = min(a, b)
  for i in range(len(pairs)):
    r = root(i)
    rank[r] = min(rank.get(r, len(SPLITS)), own[i])
  return [SPLITS[rank[root(i)]] for i in range(len(pairs))]


def split_leaks(splits: dict[str, tuple[list[str], list[str]]], split: str,
                into: str = "train") -> dict[str, int]:
  """How many pairs of `split` have an English key, a target key, or either, that a pair of
  `into` has (`split_key`): {"pairs", "english", "target", "either"}."""
  english = {split_key(t) for t in splits[into][0]}
  target = {split_key(t) for t in splits[into][1]}
  hits = [(split_key(e) in english, split_key(t) in target)
          for e, t in zip(*splits[split])]
  return {"pairs": len(hits), "english": sum(e for e, _ in hits),
          "target": sum(t for _, t in hits), "either": sum(e or t for e, t in hits)}


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


def corpus_sha256(pairs: list[tuple[str, str]]) -> str:
  """16 hex digits of the sha256 of the split rule and the pairs: the part of the fingerprint
  that identifies the corpus and how it is split (before SPLIT_RULE, of the pairs alone)."""
  text = f"split {SPLIT_RULE}\n" + "".join(f"{e}\t{t}\n" for e, t in pairs)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def fingerprint(lang: str = "de", locale_dir: str = "/usr/share/locale", min_words: int = 3,
                max_words: int = 30) -> dict:
  """What identifies the corpus: pairs, split (the rule's version), sha256 (16 hex digits of
  the rule and the pairs), catalogues, unreadable catalogues and packages (with versions).
  Two results are comparable only when their fingerprints' `sha256` match."""
  pairs, read, unreadable = read_corpus(str(locale_dir), lang, int(min_words), int(max_words))
  return {"lang": lang, "pairs": len(pairs), "split": SPLIT_RULE,
          "sha256": corpus_sha256(pairs), "catalogues": len(read),
          "unreadable": " ".join(p.name for p in unreadable), "packages": debian_packages(read)}


@functools.lru_cache(maxsize=4)
def _split_names(locale_dir: str, lang: str, min_words: int, max_words: int,
                 val_permille: int, test_permille: int) -> tuple[str, ...]:
  pairs, _, _ = read_corpus(locale_dir, lang, min_words, max_words)
  return tuple(assign_splits(pairs, val_permille, test_permille))


def corpus_splits(locale_dir: str, lang: str, min_words: int, max_words: int,
                  val_permille: int, test_permille: int, batch_size: int,
                  train_pairs: int = 0) -> dict[str, tuple[list[str], list[str]]]:
  """split -> (English lines, target lines); a UserError when a split would be empty or the
  training split smaller than a batch. `train_pairs` > 0 keeps that many training pairs (the
  first in the order of a hash of their English text, so a fixed sample; for smoke tests on
  the real corpus), val and test whole."""
  if not isinstance(train_pairs, int) or isinstance(train_pairs, bool) or train_pairs < 0:
    raise UserError(f"data.train_pairs must be an integer >= 0 (0: all); got {train_pairs!r}")
  pairs, _, _ = read_corpus(str(locale_dir), lang, int(min_words), int(max_words))
  out = {s: ([], []) for s in SPLITS}
  names = _split_names(str(locale_dir), lang, int(min_words), int(max_words),
                       int(val_permille), int(test_permille))
  for (english, translation), name in zip(pairs, names):
    src, tgt = out[name]
    src.append(english)
    tgt.append(translation)
  if train_pairs and train_pairs < len(out["train"][0]):
    src, tgt = out["train"]
    order = sorted(range(len(src)), key=lambda i: hashlib.sha256(src[i].encode()).digest())
    keep = sorted(order[:train_pairs])
    out["train"] = ([src[i] for i in keep], [tgt[i] for i in keep])
  sizes = {s: len(src) for s, (src, _) in out.items()}
  if min(sizes.values()) == 0 or sizes["train"] < int(batch_size):
    raise UserError(f"only {len(pairs)} pairs in {catalogue_dir(locale_dir, lang)} "
                    f"({min_words}-{max_words} English words), split {sizes}: too few for "
                    f"the splits and a batch of {batch_size}; install more catalogues "
                    "(`make l10n`) or widen the word range"
                    + (f" or data.train_pairs ({train_pairs})" if train_pairs else ""))
  return out


def l10n_texts(d) -> dict[str, tuple[list[str], list[str]]]:
  """`corpus_splits` of config.data `d`, after checking the corpus's fingerprint."""
  if d.corpus and d.corpus.sha256:
    rule = d.corpus.get("split") or OLD_SPLIT_RULE
    if rule != SPLIT_RULE:
      raise UserError(
          f"this config's corpus ({d.corpus.pairs} pairs, sha256 {d.corpus.sha256}) was split "
          f"by the rule {rule!r}"
          + (" (a hash of the raw English text; near-duplicates crossed splits)"
             if rule == OLD_SPLIT_RULE else "")
          + f", but this code splits by {SPLIT_RULE!r}: its val and test sets differ, and "
          "results on the two splits are not comparable; rebuild the config (a new workdir) "
          "to train and evaluate on the new split")
    pairs, _, _ = read_corpus(str(d.locale_dir), d.lang, int(d.min_words), int(d.max_words))
    sha256 = corpus_sha256(pairs)  # not `fingerprint`: its package query is not needed here
    if sha256 != d.corpus.sha256:
      raise UserError(
          f"the catalogues in {catalogue_dir(d.locale_dir, d.lang)} ({d.min_words}-"
          f"{d.max_words} English words) give {len(pairs)} pairs (sha256 {sha256}), "
          f"not the corpus this config was made for ({d.corpus.pairs} pairs, sha256 "
          f"{d.corpus.sha256}); results on the two are not comparable: install the packages "
          "of configs/l10n_packages.txt, or rebuild the config on this machine (a new workdir)")
  return corpus_splits(d.locale_dir, d.lang, d.min_words, d.max_words, d.val_permille,
                       d.test_permille, d.batch_size, d.get("train_pairs", 0))


class DebianL10nData(ParallelData):
  """English -> data.lang pairs of the installed catalogues (see the module docstring)."""

  def __init__(self, config, tokenizer_dir: str | Path | None = None):
    d = config.data
    texts = l10n_texts(d)
    try:
      splits, src_tok, tgt_tok = tokenize_splits(d, texts, ("en", d.lang), tokenizer_dir)
    except VocabTooSmall as e:  # name the corpus
      raise VocabTooSmall(e.vocab_size, e.needed, f"the training split of this corpus "
                          f"({d.lang}, {d.min_words}-{d.max_words} English words)") from None
    super().__init__(config, splits, src_tok.vocab_size, tgt_tok.vocab_size, tgt_tok.decode,
                     eval_splits=("val", "test"))
    self.tokenizers = {"src": src_tok, "tgt": tgt_tok}
