"""Caches that heal (data/cache.py): a truncated, zeroed or garbled mesh or ListOps .npz, or
tokenizer file, is moved aside with one warning and made again, equal to a fresh one; a
tokenizer that trains to other bytes than the recorded ones is refused in one line; broken
entries of the XLA cache are removed at start."""

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from metricattn.data import cache, listops, meshes
from metricattn.data import tokenizers as tok
from metricattn.errors import UserError
from tests.test_listops import SMALL
from tests.test_translation_data import sentence_pairs

HOW = ("truncate", "zero", "garble")


def corrupt(path, how):
  """Cuts the file to half, zeroes it (same length), or inverts 16 bytes in its middle."""
  data = bytearray(path.read_bytes())
  if how == "truncate":
    data = data[:len(data) // 2]
  elif how == "zero":
    data = bytearray(len(data))
  else:
    mid = len(data) // 2
    data[mid:mid + 16] = bytes(b ^ 0xFF for b in data[mid:mid + 16])
  path.write_bytes(bytes(data))
  return bytes(data)


def moved_copies(path):
  return sorted(path.parent.glob(path.name + cache.CORRUPT_INFIX + "*"))


def check_healed(capsys, path, broken: bytes, copies_before: int):
  """One warning line naming `path`; the broken bytes moved aside beside it."""
  err = capsys.readouterr().err
  warnings = [line for line in err.splitlines() if "warning" in line]
  assert len(warnings) == 1 and str(path) in warnings[0] and "moved aside" in warnings[0], err
  copies = moved_copies(path)
  assert len(copies) == copies_before + 1
  assert any(c.read_bytes() == broken for c in copies)
  assert path.exists()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
  monkeypatch.setenv(cache.DATA_ENV, str(tmp_path / "data"))
  return tmp_path / "data"


# ---------------------------------------------------------------- npz caches

def test_mesh_cache_heals(data_dir, capsys):
  small = meshes.Settings(k_eig=8, num_times=4)
  load = lambda: meshes.load_split("test", features="hks", seed=7, num_test=2, settings=small)  # noqa: E731
  fresh = load()
  path = meshes.cache_path("test", 2, 7, small)
  capsys.readouterr()
  for i, how in enumerate(HOW):
    broken = corrupt(path, how)
    again = load()
    check_healed(capsys, path, broken, i)
    for key in ("verts", "faces", "face_labels", "features", "receivers", "senders"):
      for a, b in zip(getattr(fresh, key), getattr(again, key)):
        assert a.dtype == b.dtype and np.array_equal(a, b), (how, key)
  load()  # the regenerated file reads back without a warning
  assert "warning" not in capsys.readouterr().err


def test_mesh_cache_with_other_counts_is_corrupt(data_dir, capsys):
  small = meshes.Settings(k_eig=8, num_times=4)
  path = meshes.cache_path("test", 2, 7, small)
  one = meshes.generate_records(1, 7, 1, small)
  meshes.save_records(path, one)  # a whole file, but one mesh where the name says two
  two = meshes.load_split("test", features="xyz", seed=7, num_test=2, settings=small)
  assert len(two) == 2 and np.array_equal(two.verts[0], one[0]["verts"])
  assert "not 2" in capsys.readouterr().err and len(moved_copies(path)) == 1


def test_listops_cache_heals(data_dir, capsys):
  fresh = listops.load(SMALL, say=lambda *a: None)
  path = listops.cache_path(SMALL)
  capsys.readouterr()
  for i, how in enumerate(HOW):
    broken = corrupt(path, how)
    again = listops.load(SMALL, say=lambda *a: None)
    check_healed(capsys, path, broken, i)
    for split in listops.SPLITS:
      for a, b in zip(fresh[split], again[split]):
        assert a.dtype == b.dtype and np.array_equal(a, b), (how, split)
  listops.load(SMALL, say=lambda *a: pytest.fail("generated again"))


def test_missing_file_is_not_a_warning(tmp_path, capsys):
  assert cache.load_guarded(tmp_path / "none.npz", cache.load_npz) is None
  assert capsys.readouterr().err == "" and list(tmp_path.iterdir()) == []


def test_corrupt_file_that_cannot_be_moved_is_one_line(tmp_path, monkeypatch):
  path = tmp_path / "a.npz"
  path.write_bytes(b"not a zip")
  monkeypatch.setattr(os, "rename", lambda *a: (_ for _ in ()).throw(PermissionError(13, "read-only")))
  with pytest.raises(UserError, match="cannot be moved aside") as e:
    cache.load_guarded(path, cache.load_npz)
  assert "\n" not in str(e.value) and str(path) in str(e.value) and path.read_bytes() == b"not a zip"


# ---------------------------------------------------------------- tokenizers

EN, DE = sentence_pairs(80, seed=0)
SPECS = {"sentencepiece": (tok.tokenizer_spec("sentencepiece", 60, True), {"joint": EN + DE}, "spm_joint.model"),
         "word": (tok.tokenizer_spec("word", 1, False), {"en": EN, "de": DE}, "vocab_en.txt")}


def build(work, kind):
  spec, texts, _ = SPECS[kind]
  return tok.load_or_build(work, spec, texts)


def encodings(tokenizers):
  return {name: [t.encode(s) for s in EN[:10] + DE[:10]] for name, t in tokenizers.items()}


@pytest.mark.parametrize("kind", ["sentencepiece", "word"])
@pytest.mark.parametrize("name", ["model", "tokenizer.json"])
def test_tokenizer_files_heal(tmp_path, capsys, kind, name):
  work = tmp_path / "work"
  fresh = build(work, kind)
  path = work / (SPECS[kind][2] if name == "model" else name)
  original = {p.name: p.read_bytes() for p in work.iterdir()}
  assert path.name + cache.CHECKSUM_SUFFIX in original
  capsys.readouterr()
  for i, how in enumerate(HOW):
    broken = corrupt(path, how)
    again = build(work, kind)
    check_healed(capsys, path, broken, i)
    assert {p.name: p.read_bytes() for p in work.iterdir() if cache.CORRUPT_INFIX not in p.name} == original
    assert encodings(again) == encodings(fresh)


def test_tokenizer_without_a_record_heals_by_reading(tmp_path, capsys):
  """A model written before checksum records: a zeroed one fails to parse, is moved aside
  and trained again to the same bytes."""
  work = tmp_path / "work"
  build(work, "sentencepiece")
  path = work / "spm_joint.model"
  original = path.read_bytes()
  cache.checksum_path(path).unlink()
  broken = corrupt(path, "zero")
  capsys.readouterr()
  build(work, "sentencepiece")
  check_healed(capsys, path, broken, 0)
  assert path.read_bytes() == original


def test_broken_checksum_record_is_moved_aside(tmp_path, capsys):
  work = tmp_path / "work"
  build(work, "word")
  record = cache.checksum_path(work / "vocab_de.txt")
  broken = corrupt(record, "garble")
  capsys.readouterr()
  build(work, "word")
  err = capsys.readouterr().err
  assert err.count("warning") == 1 and str(record) in err
  assert [p.read_bytes() for p in moved_copies(record)] == [broken]
  assert not record.exists() and (work / "vocab_de.txt").exists()  # the vocabulary itself was fine


def test_retrained_tokenizer_that_differs_is_refused(tmp_path, capsys, monkeypatch):
  work = tmp_path / "work"
  build(work, "sentencepiece")
  path = work / "spm_joint.model"
  corrupt(path, "zero")
  other = tok.train_sentencepiece(EN + DE, 50)  # as another sentencepiece version might
  monkeypatch.setattr(tok, "train_sentencepiece", lambda lines, size: other)
  with pytest.raises(UserError) as e:
    build(work, "sentencepiece")
  msg = str(e.value)
  assert "\n" not in msg and str(path) in msg and "new workdir" in msg
  assert not path.exists() and len(moved_copies(path)) == 1  # nothing wrong written in its place
  with pytest.raises(UserError, match="another tokenizer"):  # and the next run says so again
    build(work, "sentencepiece")


def test_sentencepiece_training_is_deterministic_across_processes():
  """Training again in a fresh process (another hash seed) gives the same bytes."""
  code = textwrap.dedent("""
      import json, sys
      from metricattn.data import tokenizers as tok
      sys.stdout.buffer.write(tok.train_sentencepiece(json.load(sys.stdin), 60))""")
  env = dict(os.environ, PYTHONHASHSEED="123")
  out = subprocess.run([sys.executable, "-c", code], input=json.dumps(EN + DE).encode(),
                       capture_output=True, env=env, cwd=os.getcwd(), check=True).stdout
  assert out == tok.train_sentencepiece(EN + DE, 60)


# ---------------------------------------------------------------- XLA cache

def test_broken_xla_cache_entries_are_removed_at_start(tmp_path):
  xla = tmp_path / "xla"
  code = textwrap.dedent("""
      from metricattn.cli import enable_compilation_cache
      enable_compilation_cache()
      import jax, jax.numpy as jnp
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
      print(float(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).sum()))""")
  env = dict(os.environ, METRICATTN_XLA_CACHE=str(xla), JAX_PLATFORMS="cpu")
  run = lambda: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,  # noqa: E731
                               env=env, cwd=os.getcwd(), check=True)
  first = run()
  entries = sorted(xla.glob("*-cache"))
  assert entries and "warning" not in first.stderr
  empty, zeroed, good = entries[0], entries[-1], entries[1:-1]
  empty.write_bytes(b"")
  zeroed.write_bytes(bytes(zeroed.stat().st_size))
  young = xla / "jit_being_written-0123-cache"
  young.write_bytes(b"")  # as a write in progress: too young to remove
  now = time.time()
  os.utime(young, (now + 600, now + 600))  # young however slowly the next process starts
  for p in (empty, zeroed):
    os.utime(p, (now - 60, now - 60))
  (xla / ".lockfile").write_bytes(b"")  # not an entry
  second = run()
  assert second.stdout == first.stdout
  lines = [line for line in second.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and "removed 2 broken entries" in lines[0] and str(xla) in lines[0], second.stderr
  assert young.exists() and (xla / ".lockfile").exists() and all(p.exists() for p in good)
  # JAX read no broken entry (it would have warned) and wrote the removed ones again
  assert empty.stat().st_size > 0 and zeroed.read_bytes()[:1] != b"\0"
