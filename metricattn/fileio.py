"""Files written so that a kill, a full disk or a second process never leaves half of one.

The one atomic writer of the project (`write_atomic`: a temporary file beside the target,
then a rename; the temporary file is removed on any failure), the readers that tolerate
what an interrupted writer can leave (`read_json`: None for a missing or unreadable file;
`read_jsonl`: a torn last line is dropped with one warning), `cut_jsonl`, which cuts
an append-only log back to a step without ever rewriting it in place, and a full disk as one
line (`NoSpace`, `full_disk_is_one_line`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import tempfile
from pathlib import Path

from metricattn.errors import UserError

FULL = (errno.ENOSPC, errno.EDQUOT)


def write_atomic(path: str | Path, data: str | bytes) -> None:
  """Writes `data` (text or bytes) to `path` through a temporary file and a rename: never
  half a file, also when several processes write the same file at once."""
  path = Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
      f.write(data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as open() would have made it (mkstemp makes 0600)
    os.replace(tmp, path)
  except BaseException as e:
    Path(tmp).unlink(missing_ok=True)
    if isinstance(e, OSError) and e.errno in FULL and not e.filename:
      raise OSError(e.errno, e.strerror, str(path)) from e  # name the file, not the fd
    raise


class NoSpace(UserError):
  """No space left on the device while writing PATH: one line saying what is intact (`kept`)
  and what to do."""

  def __init__(self, path, kept: str):
    self.path = path
    super().__init__(f"no space left on device while writing {path}; {kept}; free space "
                     "and rerun the same command")


@contextlib.contextmanager
def full_disk_is_one_line(path, kept: str):
  """Turns a full disk inside the block into `NoSpace` (naming the file the error names, else
  `path`); any other exception passes."""
  try:
    yield
  except OSError as e:
    where = full_disk_path(e)
    if where is None:
      raise
    raise NoSpace(where or path, kept) from None


def full_disk_path(e: BaseException) -> str | None:
  """When `e` (or an exception it was raised from) is "no space left on device" (or a full
  quota): the file it names, or "" when none; None for any other exception. Libraries that
  write in threads (orbax) wrap the OSError, so its chain and its text are searched."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in FULL:
      return str(e.filename or "")
    if "No space left on device" in str(e) or "Disk quota exceeded" in str(e):
      return ""
    e = e.__cause__ or e.__context__
  return None


def read_json(path: str | Path) -> dict | None:
  """A JSON object file, or None when it is missing or unreadable (e.g. truncated)."""
  try:
    value = json.loads(Path(path).read_text())
  except (OSError, ValueError):
    return None
  return value if isinstance(value, dict) else None


def _rows(path: Path) -> list[tuple[dict | None, int]]:
  """(row, byte offset after its line) for each line of a JSON-lines file (row None for a
  blank line). A last line without its newline, or a last line that does not parse (a write
  cut short), is left out with one warning on stderr; a bad line before it is a ValueError
  naming the line."""
  try:
    lines = path.read_bytes().split(b"\n")
  except FileNotFoundError:
    return []
  out, end = [], 0
  for i, line in enumerate(lines[:-1]):
    try:
      row = json.loads(line) if line.strip() else None
    except ValueError:
      if i < len(lines) - 2:
        raise ValueError(f"{path}: line {i + 1} is not JSON") from None
      lines[-1] = line  # the torn line, reported below
      break
    end += len(line) + 1
    out.append((row, end))
  if lines[-1]:
    print(f"warning: {path}: dropped a torn last line ({len(lines[-1])} bytes of an "
          "interrupted write)", file=sys.stderr)
  return out


def read_jsonl(path: str | Path) -> list[dict]:
  """The rows of a JSON-lines file ([] when it is missing); a torn last line is dropped
  with one warning."""
  return [row for row, _ in _rows(Path(path)) if row is not None]


def cut_jsonl(path: str | Path, keep) -> list[dict]:
  """Keeps only the rows of a JSON-lines file for which `keep(row)` holds (and drops a torn
  last line); returns them. Never rewrites the file in place: when the rows to drop are its
  tail it is cut with `truncate` at the byte offset of the last kept row, otherwise the kept
  rows replace it through `write_atomic`. A kill or a full disk at any point loses no kept
  row."""
  path = Path(path)
  rows = _rows(path)
  kept = [row for row, _ in rows if row is not None and keep(row)]
  tail = len(rows)
  while tail and (rows[tail - 1][0] is None or not keep(rows[tail - 1][0])):
    tail -= 1
  if all(row is None or keep(row) for row, _ in rows[:tail]):
    end = rows[tail - 1][1] if tail else 0
    if path.exists() and path.stat().st_size != end:
      os.truncate(path, end)
  else:
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
  return kept
