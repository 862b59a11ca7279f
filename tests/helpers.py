"""Helpers shared by the tests: tiny configs and running the CLI."""

import struct
import subprocess
import sys
from pathlib import Path

from metricattn.config_utils import load_config_file, load_module, set_override
from metricattn.fileio import write_atomic

ROOT = Path(__file__).resolve().parents[1]
COMMON = load_module(ROOT / "configs/common.py")  # what the config files share


def load_config(path: str, arg: str | None = None, **overrides):
  """Config from a configs/ file with dotted-key overrides, e.g. train__steps=5."""
  config = load_config_file(ROOT / path, arg)
  for key, value in overrides.items():
    set_override(config, key.replace("__", "."), value)
  return config


def tiny_moons(**overrides):
  base = dict(train__steps=40, train__log_every=10, train__eval_every=20,
              train__checkpoint_every=20)
  base.update(overrides)
  return load_config("configs/moons_ipn.py", **base)


def cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                        text=True, env=env, timeout=timeout)


def write_mo(path: Path, messages: dict, header: str = "Content-Type: text/plain; "
             "charset=UTF-8\nPlural-Forms: nplurals=2; plural=(n != 1);\n") -> Path:
  """A compiled gettext catalogue (GNU .mo, little-endian, no hash table) of `messages`:
  msgid -> msgstr, or (msgid, msgid_plural) -> [forms]; "ctx\\x04msgid" keys carry a context."""
  def encode(key, value):
    if isinstance(key, tuple):
      return "\0".join(key).encode(), "\0".join(value).encode()
    return key.encode(), value.encode()
  entries = sorted([encode("", header)] + [encode(k, v) for k, v in messages.items()])
  n = len(entries)
  head, strings = struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 28 + 16 * n), b""
  tables = [b"", b""]
  for column in (0, 1):
    for entry in entries:
      tables[column] += struct.pack("<2I", len(entry[column]), 28 + 16 * n + len(strings))
      strings += entry[column] + b"\0"
  # Atomic: pytest-xdist workers write the same catalogues at once (tests/conftest.py).
  path.parent.mkdir(parents=True, exist_ok=True)
  write_atomic(path, head + tables[0] + tables[1] + strings)
  return path


L10N_NOUNS = [("file", "Datei"), ("directory", "Verzeichnis"), ("archive", "Archiv"),
              ("socket", "Socket"), ("device", "Gerät"), ("key", "Schlüssel"),
              ("user", "Benutzer"), ("group", "Gruppe"), ("table", "Tabelle"),
              ("index", "Index"), ("branch", "Zweig"), ("commit", "Commit"),
              ("package", "Paket"), ("session", "Sitzung"), ("schema", "Schema"),
              ("partition", "Partition"), ("signature", "Signatur"), ("pipe", "Pipe"),
              ("module", "Modul"), ("window", "Fenster")]
L10N_TEMPLATES = [("cannot open {} %s", "{} %s kann nicht geöffnet werden"),
                  ("cannot read {} %s", "{} %s kann nicht gelesen werden"),
                  ("cannot write {} %s", "{} %s kann nicht geschrieben werden"),
                  ("cannot remove {} '%1$s'", "{} »%1$s« kann nicht entfernt werden"),
                  ("failed to create {} %s", "{} %s konnte nicht erstellt werden"),
                  ("failed to lock {} %s", "{} %s konnte nicht gesperrt werden"),
                  ("the {} %s does not exist", "{} %s existiert nicht"),
                  ("the {} {{name}} is not valid", "{} {{name}} ist nicht gültig"),
                  ("_Open the {} now", "{} jetzt ö_ffnen"),
                  ("waiting for the {} to\nbecome ready", "warte, bis {} bereit\nist"),
                  ("%d bytes left in the {}", "%d Bytes übrig in {}"),
                  ("no {} was found here", "hier wurde kein {} gefunden")]
# Near-duplicates of the templates (case, punctuation, placeholder style; or another English
# text with the same German), which a split by the raw English text puts in other splits than
# their templates (issue 27): the same keys (l10n.split_key) as "cannot open {} %s" / its
# German, "the {} %s does not exist", and the German of "cannot read {} %s".
L10N_NEAR_DUPLICATES = [("Cannot open {} '%s'.", "{} »%s« kann nicht geöffnet werden."),
                        ("The {} {{path}} does not exist!", "{} {{path}} existiert nicht!"),
                        ("unable to read the {} %s", "{} %s kann nicht gelesen werden")]


def write_l10n_catalogues(locale_dir: Path, lang: str = "de") -> Path:
  """Two catalogues of 240 template pairs (+ a plural, a context, an untranslated word, a
  duplicate with another translation), one of 60 near-duplicates of templates, and one that
  gettext cannot read, in locale_dir/lang/LC_MESSAGES."""
  pairs = {en.format(n): de.format(d) for n, d in L10N_NOUNS for en, de in L10N_TEMPLATES}
  half = len(pairs) // 2
  items = sorted(pairs.items())
  first = {**dict(items[:half]), ("%d file", "%d files"): ["%d Datei", "%d Dateien"],
           "menu\x04cannot open the main menu": "Hauptmenü nicht zu öffnen",
           "Linux kernel version": "Linux kernel version",
           "no file was found here": "keine Datei gefunden"}
  second = {**dict(items[half:]), "no file was found here": "hier wurde keine Datei gefunden"}
  d = locale_dir / lang / "LC_MESSAGES"
  write_mo(d / "first.mo", first)
  write_mo(d / "second.mo", second)
  write_mo(d / "third.mo", {"no file was found here": "hier wurde keine Datei gefunden"})
  write_mo(d / "variants.mo", {en.format(n): de.format(g) for n, g in L10N_NOUNS
                               for en, de in L10N_NEAR_DUPLICATES})
  write_atomic(d / "broken.mo", b"not a catalogue")
  return locale_dir
