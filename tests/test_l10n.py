"""The debian_l10n data set on catalogues the tests compile (tests/helpers.py): markup
normalisation, one translation per English text, the split (no near-duplicates across
splits, stable), the fingerprint, errors, and a tiny training run of
configs/l10n_translation.py."""

import hashlib
import json
import os
import re

import ml_collections
import pytest

from metricattn import registry
from metricattn.data import get_dataset, l10n
from metricattn.errors import UserError
from tests.helpers import cli, load_config, write_l10n_catalogues, write_mo

LOCALE = os.environ["METRICATTN_LOCALE_DIR"]  # tests/conftest.py wrote the catalogues


@pytest.mark.parametrize("text, expected", [
    ("cannot open %s", "cannot open {}"),
    ("%1$s of %2$lu bytes (%5.1f%%)", "{} of {} bytes ({}%)"),
    ("%(name)s has {count} items in {0}", "{} has {} items in {}"),
    ("  two\nlines\tand  spaces \n", "two lines and spaces"),
    ("Fehler beim Öffnen von »%s«: %m\n", "Fehler beim Öffnen von »{}«: {}"),
])
def test_normalize(text, expected):
  assert l10n.normalize(text) == expected


@pytest.mark.parametrize("english, translation, expected", [
    ("_Open the file", "Datei ö_ffnen", ("Open the file", "Datei öffnen")),
    ("E_xit", "_Beenden", ("Exit", "Beenden")),
    ("&Save %s", "%s &speichern", ("Save {}", "{} speichern")),
    ("GTK_CAN_DEFAULT set", "GTK_CAN_DEFAULT gesetzt", ("GTK_CAN_DEFAULT set",
                                                        "GTK_CAN_DEFAULT gesetzt")),
    ("call pam_set_item() _now", "pam_set_item() aufrufen", ("call pam_set_item() _now",
                                                             "pam_set_item() aufrufen")),
    ("R & D", "F & E", ("R & D", "F & E")),
])
def test_accelerators_go_from_both_sides(english, translation, expected):
  assert l10n.normalize_pair(english, translation) == expected


def test_corpus_reads_singular_messages_once_with_the_most_frequent_translation():
  pairs, read, unreadable = l10n.read_corpus(LOCALE, "de", 3, 30)
  assert [p.name for p in read] == ["first.mo", "second.mo", "third.mo", "variants.mo"]
  assert [p.name for p in unreadable] == ["broken.mo"]
  d = dict(pairs)
  assert len(d) == len(pairs) == 240 + 1 + 60     # templates, context message, near-duplicates
  assert d["cannot open the main menu"] == "Hauptmenü nicht zu öffnen"   # context dropped
  assert d["no file was found here"] == "hier wurde keine Datei gefunden"  # 2 of 3 catalogues
  assert d["cannot remove file '{}'"] == "Datei »{}« kann nicht entfernt werden"
  assert d["Open the file now"] == "Datei jetzt öffnen"
  assert "Linux kernel version" not in d and "{} file" not in d   # untranslated, plural
  assert all(3 <= len(e.split()) <= 30 for e in d)
  assert len(l10n.read_corpus(LOCALE, "de", 6, 30)[0]) < len(pairs)


@pytest.mark.parametrize("text, key", [
    ("Cannot open file '%s'.", "cannot open file"),
    ("cannot open file {}", "cannot open file"),
    ("The file {path} does not exist!", "the file does not exist"),
    ("%1$s of %2$lu bytes (%5.1f%%)", "of bytes"),
    ("%qD writing to an object of type %#qT with %<-fno-rtti%>",
     "writing to an object of type with fno rtti"),
    ("Datei »%s« kann nicht geöffnet werden.", "datei kann nicht geöffnet werden"),
    ("GRÖSSE_DER_DATEI:\tungültig…", "grösse der datei ungültig"),
    ("Straße", "strasse"),
])
def test_split_key(text, key):
  assert l10n.split_key(text) == key == l10n.split_key(l10n.normalize(text))


def test_own_split_is_a_hash_of_the_english_key():
  assert l10n.split_of("Cannot open file '%s'.", 30, 30) == l10n.split_of("cannot open file {}",
                                                                          30, 30)
  names = [l10n.split_of(f"message number {i}", 30, 30) for i in range(2000)]
  assert 0.02 < names.count("val") / 2000 < 0.04 and 0.02 < names.count("test") / 2000 < 0.04


def old_rule_splits(pairs):
  """The split before SPLIT_RULE: a hash of the raw English text (issue 27)."""
  out = {s: ([], []) for s in l10n.SPLITS}
  for english, target in pairs:
    slot = int(hashlib.sha256(english.encode("utf-8")).hexdigest()[:8], 16) % 1000
    name = "val" if slot < 30 else "test" if slot < 60 else "train"
    out[name][0].append(english)
    out[name][1].append(target)
  return out


def test_no_near_duplicate_crosses_splits():
  """No val or test pair has the English or German key of a training pair, nor a test pair
  that of a val pair; the catalogues hold near-duplicates that the old rule (a hash of the
  raw English text) split apart, so this fails with it."""
  splits = l10n.corpus_splits(LOCALE, "de", 3, 30, 30, 30, 16)
  assert min(len(src) for src, _ in splits.values()) > 0
  for split, into in (("val", "train"), ("test", "train"), ("test", "val")):
    leaks = l10n.split_leaks(splits, split, into)
    assert leaks["either"] == 0, (split, into, leaks)
  pairs, _, _ = l10n.read_corpus(LOCALE, "de", 3, 30)
  old = old_rule_splits(pairs)
  assert sum(l10n.split_leaks(old, s)["english"] for s in ("val", "test")) > 0
  assert sum(l10n.split_leaks(old, s)["target"] for s in ("val", "test")) > 0
  # Hashing the key alone keeps English keys together but not German ones: the groups do.
  own = {s: ([], []) for s in l10n.SPLITS}
  for english, target in pairs:
    own[l10n.split_of(english, 30, 30)][0].append(english)
    own[l10n.split_of(english, 30, 30)][1].append(target)
  assert sum(l10n.split_leaks(own, s)["target"] for s in ("val", "test")) > 0


def test_a_pair_with_a_german_key_in_training_goes_to_training():
  i = next(i for i in range(100)
           if l10n.split_of(f"please open file {i}", 30, 30) != "train")
  j = next(j for j in range(100) if l10n.split_of(f"open that file {j}", 30, 30) == "train")
  pairs = [(f"please open file {i}", "Datei öffnen!"), (f"open that file {j}", "Datei öffnen")]
  assert l10n.assign_splits(pairs, 30, 30) == ["train", "train"]
  assert l10n.assign_splits(pairs[:1], 30, 30) != ["train"]


def test_new_catalogues_move_no_unrelated_pair_and_linked_ones_only_to_training(tmp_path):
  pairs, _, _ = l10n.read_corpus(LOCALE, "de", 3, 30)
  split = dict(zip(pairs, l10n.assign_splits(pairs, 30, 30)))
  d = write_l10n_catalogues(tmp_path / "a") / "de" / "LC_MESSAGES"
  write_mo(d / "extra.mo",
           {f"an extra message number {i}": f"eine weitere Meldung Nummer {i}" for i in range(50)})
  more, _, _ = l10n.read_corpus(str(tmp_path / "a"), "de", 3, 30)
  assert len(more) == len(pairs) + 50
  moved = {p: s for p, s in zip(more, l10n.assign_splits(more, 30, 30)) if p in split}
  assert moved == split
  # A new English text whose own split is training, with the German of a test pair: that
  # pair joins it in training, and nothing else moves.
  english, german = next(p for p, s in split.items() if s == "test")
  new = next(f"a new text number {i}" for i in range(100)
             if l10n.split_of(f"a new text number {i}", 30, 30) == "train")
  d = write_l10n_catalogues(tmp_path / "b") / "de" / "LC_MESSAGES"  # (read_corpus caches)
  write_mo(d / "extra.mo", {new: german})
  more, _, _ = l10n.read_corpus(str(tmp_path / "b"), "de", 3, 30)
  now = dict(zip(more, l10n.assign_splits(more, 30, 30)))
  assert now[(english, german)] == now[(new, german)] == "train"
  assert {p for p in split if now[p] != split[p]} == {(english, german)}


def test_fingerprint_changes_with_the_corpus_and_the_split_rule(tmp_path, monkeypatch):
  f = l10n.fingerprint("de", LOCALE)
  assert f["pairs"] == 301 and f["catalogues"] == 4 and f["unreadable"] == "broken.mo"
  assert f["split"] == l10n.SPLIT_RULE == "normalised-v2"
  assert f == l10n.fingerprint("de", LOCALE)
  write_l10n_catalogues(tmp_path)
  write_mo(tmp_path / "de" / "LC_MESSAGES" / "extra.mo", {"one more long message": "noch eine"})
  assert l10n.fingerprint("de", str(tmp_path))["sha256"] != f["sha256"]
  pairs, _, _ = l10n.read_corpus(LOCALE, "de", 3, 30)
  monkeypatch.setattr(l10n, "SPLIT_RULE", "normalised-v3")
  assert l10n.corpus_sha256(pairs) != f["sha256"]


def test_config_records_the_fingerprint_and_loading_checks_it(tmp_path):
  config = load_config("configs/l10n_translation.py", "model=small,batch=16",
                       **{"data.tokenizer_dir": str(tmp_path / "tok"), "data.vocab_size": 120})
  assert config.data.corpus.sha256 == l10n.fingerprint("de", LOCALE)["sha256"]
  data = get_dataset(config)
  sizes = {s: len(data.references(s)) for s in ("train", "val", "test")}
  assert sum(sizes.values()) == 301 and min(sizes.values()) > 0
  assert data.info["num_train"] == sizes["train"]
  config.data.corpus.sha256 = "0123456789abcdef"
  with pytest.raises(UserError, match=r"give 301 pairs .* not the corpus this config was made"):
    get_dataset(config)


def test_a_config_split_by_an_earlier_rule_is_refused(tmp_path):
  """A run's config.json from before SPLIT_RULE (no data.corpus.split) is refused in one
  line: its val and test sets are not the ones this code would evaluate."""
  config = load_config("configs/l10n_translation.py", "model=small,batch=16",
                       **{"data.tokenizer_dir": str(tmp_path / "tok")})
  old = json.loads(config.to_json())
  del old["data"]["corpus"]["split"]
  with pytest.raises(UserError, match=r"split by the rule 'english-v1' \(a hash of the raw "
                     r"English text.*this code splits by 'normalised-v2'"):
    l10n.l10n_texts(ml_collections.ConfigDict(old)["data"])


def test_train_pairs_keeps_a_fixed_sample_of_the_training_split():
  """data.train_pairs (smoke tests of the real corpus) keeps that many training pairs, always
  the same ones, and val and test whole; the steps follow it."""
  full = l10n.corpus_splits(LOCALE, "de", 3, 30, 30, 30, 16)
  some = l10n.corpus_splits(LOCALE, "de", 3, 30, 30, 30, 16, 100)
  assert len(some["train"][0]) == 100 and (some["val"], some["test"]) == (full["val"], full["test"])
  assert set(zip(*some["train"])) < set(zip(*full["train"]))
  assert some == l10n.corpus_splits(LOCALE, "de", 3, 30, 30, 30, 16, 100)
  assert l10n.corpus_splits(LOCALE, "de", 3, 30, 30, 30, 16, 10**6) == full
  assert load_config("configs/l10n_translation.py",
                     "model=small,batch=16,epochs=1,train_pairs=100").train.steps == 100 // 16
  config = load_config("configs/l10n_translation.py", "model=small,batch=16,epochs=1")
  assert config.train.steps == len(full["train"][0]) // 16
  config.data.train_pairs = 100                                   # derived: steps follow
  assert (config.train.steps, config.train.eval_every) == (6, 1)
  with pytest.raises(UserError, match=r"data.train_pairs must be an integer >= 0 \(0: all\); "
                     "got -1"):
    l10n.corpus_splits(LOCALE, "de", 3, 30, 30, 30, 16, -1)


@pytest.mark.parametrize("arg, message", [
    ("lang=xx", r"no message catalogues for language 'xx': .*xx/LC_MESSAGES holds no \.mo"),
    ("batch=512", r"only 301 pairs in .*de/LC_MESSAGES \(3-30 English words\), split "),
])
def test_bad_input_is_one_line(tmp_path, arg, message):
  with pytest.raises(UserError, match=message):
    config = load_config("configs/l10n_translation.py", f"model=small,{arg}")
    get_dataset(config)


def test_tiny_run_reports_bleu_chrf_and_the_corpus(tmp_path):
  budget = registry.EXPERIMENTS["l10n_translation"].budget("test")
  workdir = tmp_path / "attention=l2"
  r = cli("metricattn.main", f"--config=configs/l10n_translation.py:{budget.args},attention=l2",
          f"--workdir={workdir}", *[f"--config.{o}" for o in budget.overrides])
  assert r.returncode == 0, r.stderr[-2000:]
  summary = json.loads((workdir / "summary.json").read_text())
  assert 0 <= summary["test/bleu"] <= 100 and 0 < summary["test/chrf"] <= 100
  assert summary["test/perplexity"] > 1
  assert cli("metricattn.report", str(tmp_path)).returncode == 0
  config = json.loads((workdir / "config.json").read_text())
  report = (tmp_path / "report.md").read_text()
  assert f"sha256 {config['data']['corpus']['sha256']}" in report


def test_too_small_a_vocabulary_is_one_line(tmp_path):
  """SentencePiece refuses fewer pieces than the training split has characters: one `error:`
  line naming data.vocab_size and the least it takes, which then works."""
  budget = registry.EXPERIMENTS["l10n_translation"].budget("test")
  overrides = [o for o in budget.overrides if not o.startswith("data.vocab_size=")]
  r = cli("metricattn.main", f"--config=configs/l10n_translation.py:{budget.args}",
          f"--workdir={tmp_path / 'run'}", *[f"--config.{o}" for o in overrides],
          "--config.data.vocab_size=20")
  assert r.returncode == 2, r.stderr[-2000:]
  assert "Traceback" not in r.stderr
  errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "data.vocab_size=20 is too small" in errors[0], r.stderr[-2000:]
  least = int(re.search(r"at least (\d+);", errors[0])[1])
  config = load_config("configs/l10n_translation.py", "model=small,batch=16",
                       **{"data.tokenizer_dir": str(tmp_path / "tok"),
                          "data.vocab_size": least - 1})
  with pytest.raises(UserError, match=f"data.vocab_size={least - 1} is too small .* at least "
                     f"{least};"):
    get_dataset(config)
  config.data.vocab_size = least
  assert get_dataset(config).info["num_train"] > 0
