"""The project's file writing and reading: atomic writes, torn JSON lines, logs cut back safely."""

import json
import os

import pytest

from metricattn.fileio import cut_jsonl, read_json, read_jsonl, write_atomic


def rows(n):
  return [{"step": 10 * i, "split": "train", "loss": 1.0 / (i + 1)} for i in range(n)]


def write_rows(path, rs, tail=""):
  path.write_text("".join(json.dumps(r) + "\n" for r in rs) + tail)


def test_write_atomic_text_bytes_and_cleanup(tmp_path, monkeypatch):
  write_atomic(tmp_path / "a.txt", "text\n")
  write_atomic(tmp_path / "b.bin", b"\x00\x01")
  assert (tmp_path / "a.txt").read_text() == "text\n"
  assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
  # A failure between writing and renaming leaves the old file and no temporary file.
  monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "full")))
  with pytest.raises(OSError):
    write_atomic(tmp_path / "a.txt", "new\n")
  assert (tmp_path / "a.txt").read_text() == "text\n"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]


def test_read_json_tolerates_missing_and_truncated(tmp_path):
  assert read_json(tmp_path / "none.json") is None
  (tmp_path / "t.json").write_text('{"a": 1')
  assert read_json(tmp_path / "t.json") is None
  (tmp_path / "l.json").write_text("[1]")
  assert read_json(tmp_path / "l.json") is None


def test_read_jsonl_drops_a_torn_last_line(tmp_path, capsys):
  path = tmp_path / "m.jsonl"
  write_rows(path, rows(3), tail='{"step": 327, "split": "trai')
  assert read_jsonl(path) == rows(3)
  assert "dropped a torn last line" in capsys.readouterr().err
  write_rows(path, rows(3))
  assert read_jsonl(path) == rows(3)
  assert capsys.readouterr().err == ""
  # A complete but unparsable last line (a write cut short at a line end) is torn too.
  write_rows(path, rows(2), tail='{"step": 3\n')
  assert read_jsonl(path) == rows(2)
  # A bad line in the middle is not an interrupted write: it is reported, never dropped.
  path.write_text(json.dumps(rows(1)[0]) + "\nxx\n" + json.dumps(rows(1)[0]) + "\n")
  with pytest.raises(ValueError, match="line 2"):
    read_jsonl(path)
  assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_cut_jsonl_truncates_a_tail_in_place_of_rewriting(tmp_path, monkeypatch):
  path = tmp_path / "m.jsonl"
  write_rows(path, rows(6), tail='{"step": 6')
  inode = path.stat().st_ino
  # The tail is cut by truncate alone: nothing before the cut is written again.
  monkeypatch.setattr("metricattn.fileio.write_atomic",
                      lambda *a: pytest.fail("rewrote the file"))
  assert cut_jsonl(path, lambda r: r["step"] <= 20) == rows(3)
  assert read_jsonl(path) == rows(3)
  assert path.stat().st_ino == inode
  assert path.read_text() == "".join(json.dumps(r) + "\n" for r in rows(3))
  assert cut_jsonl(path, lambda r: True) == rows(3)
  assert cut_jsonl(tmp_path / "missing.jsonl", lambda r: True) == []
  assert not (tmp_path / "missing.jsonl").exists()


def test_cut_jsonl_out_of_order_rows_go_through_an_atomic_rewrite(tmp_path):
  path = tmp_path / "m.jsonl"
  rs = rows(4)
  rs[1], rs[3] = rs[3], rs[1]   # steps 0, 30, 20, 10: dropping 30 is not a tail cut
  write_rows(path, rs)
  assert cut_jsonl(path, lambda r: r["step"] <= 20) == [rs[0], rs[2], rs[3]]
  assert read_jsonl(path) == [rs[0], rs[2], rs[3]]
