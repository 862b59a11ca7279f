"""The debian_l10n data set on catalogues the tests compile (tests/helpers.py): markup
normalisation, one translation per English text, the stable split, the fingerprint, errors,
and a tiny training run of configs/l10n_translation.py."""

import json
import os

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
  assert [p.name for p in read] == ["first.mo", "second.mo", "third.mo"]
  assert [p.name for p in unreadable] == ["broken.mo"]
  d = dict(pairs)
  assert len(d) == len(pairs) == 240 + 1          # the templates and the context message
  assert d["cannot open the main menu"] == "Hauptmenü nicht zu öffnen"   # context dropped
  assert d["no file was found here"] == "hier wurde keine Datei gefunden"  # 2 of 3 catalogues
  assert d["cannot remove file '{}'"] == "Datei »{}« kann nicht entfernt werden"
  assert d["Open the file now"] == "Datei jetzt öffnen"
  assert "Linux kernel version" not in d and "{} file" not in d   # untranslated, plural
  assert all(3 <= len(e.split()) <= 30 for e in d)
  assert len(l10n.read_corpus(LOCALE, "de", 6, 30)[0]) < len(pairs)


def test_split_depends_on_the_english_text_only(tmp_path):
  pairs, _, _ = l10n.read_corpus(LOCALE, "de", 3, 30)
  split = {e: l10n.split_of(e, 30, 30) for e, _ in pairs}
  assert set(split.values()) == {"train", "val", "test"}
  # A new catalogue adds pairs; no old pair moves.
  write_l10n_catalogues(tmp_path)
  write_mo(tmp_path / "de" / "LC_MESSAGES" / "extra.mo",
           {f"an extra message number {i}": f"eine weitere Meldung Nummer {i}" for i in range(50)})
  more, _, _ = l10n.read_corpus(str(tmp_path), "de", 3, 30)
  assert len(more) == len(pairs) + 50
  assert all(l10n.split_of(e, 30, 30) == split[e] for e, _ in more if e in split)


def test_fingerprint_changes_with_the_corpus(tmp_path):
  f = l10n.fingerprint("de", LOCALE)
  assert f["pairs"] == 241 and f["catalogues"] == 3 and f["unreadable"] == "broken.mo"
  assert f == l10n.fingerprint("de", LOCALE)
  write_l10n_catalogues(tmp_path)
  write_mo(tmp_path / "de" / "LC_MESSAGES" / "extra.mo", {"one more long message": "noch eine"})
  assert l10n.fingerprint("de", str(tmp_path))["sha256"] != f["sha256"]


def test_config_records_the_fingerprint_and_loading_checks_it(tmp_path):
  config = load_config("configs/l10n_translation.py", "model=small,batch=16",
                       **{"data.tokenizer_dir": str(tmp_path / "tok"), "data.vocab_size": 120})
  assert config.data.corpus.sha256 == l10n.fingerprint("de", LOCALE)["sha256"]
  data = get_dataset(config)
  sizes = {s: len(data.references(s)) for s in ("train", "val", "test")}
  assert sum(sizes.values()) == 241 and min(sizes.values()) > 0
  assert data.info["num_train"] == sizes["train"]
  config.data.corpus.sha256 = "0123456789abcdef"
  with pytest.raises(UserError, match=r"give 241 pairs .* not the corpus this config was made"):
    get_dataset(config)


@pytest.mark.parametrize("arg, message", [
    ("lang=xx", r"no message catalogues for language 'xx': .*xx/LC_MESSAGES holds no \.mo"),
    ("batch=512", r"only 241 pairs in .*de/LC_MESSAGES \(3-30 English words\), split "),
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
