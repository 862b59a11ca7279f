"""Where generated data sets are cached, how a cache file is written, and how it is read back.

The root is $METRICATTN_DATA, else ~/.cache/metricattn; each generator keeps its files in
a folder of its own below it (`meshes/`, `listops/`) and names them by every setting that
changes their content, so a changed setting never reads a stale file. A run's tokenizer
files live in its workdir (tokenizers.py) and are read and written the same way.

Writing is atomic (`fileio.write_atomic`): `save_npz` for arrays; `save_checked` for files
that cannot check themselves (a SentencePiece model, a vocabulary, a JSON record), which
also writes NAME.sha256 beside the file (`sha256sum` format). A full disk is one line
(`fileio.NoSpace`), the file as it was before left in place.

Reading goes through `load_guarded`, the one place that decides a cache file is bad: the
file's recorded sha256 must match when there is one, and the caller's loader must read the
whole file and check it (`load_npz` reads every array, so each member's zip CRC-32 is
checked, and requires the expected keys). A file that fails (truncated, zeroed, garbled,
unreadable) is moved aside to NAME.corrupt-<time> beside it, never deleted, with one
warning line on stderr naming it and what was wrong; `load_guarded` then returns None and
the caller makes the file again exactly as if it were missing.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import numpy as np

from metricattn.errors import UserError
from metricattn.fileio import full_disk_is_one_line, write_atomic

DATA_ENV = "METRICATTN_DATA"
CHECKSUM_SUFFIX = ".sha256"
CORRUPT_INFIX = ".corrupt-"
# What a full disk leaves while a cache file is written (one line, `fileio.NoSpace`).
KEPT = "files written before are intact (written atomically)"
_CHECKSUM_LINE = re.compile(r"([0-9a-f]{64})  (.+)\n")

T = TypeVar("T")


class CorruptFile(ValueError):
  """A cache file that reads but is not what was written (a checksum or a check failed)."""


def data_root() -> Path:
  """$METRICATTN_DATA, else ~/.cache/metricattn."""
  root = os.environ.get(DATA_ENV)
  return Path(root) if root else Path.home() / ".cache" / "metricattn"


# ---------------------------------------------------------------- writing

def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
  """Writes one .npz atomically (`fileio.write_atomic`), so that a reader never sees half a
  file and concurrent writers of the same file do not clash. The zip format keeps a CRC-32
  of every array, which `load_npz` checks."""
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  with full_disk_is_one_line(path, KEPT):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buf.getvalue())


def checksum_path(path: Path) -> Path:
  return path.with_name(path.name + CHECKSUM_SUFFIX)


def sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def save_checked(path: Path, data: bytes) -> None:
  """Writes `data` to `path` and its sha256 to NAME.sha256 beside it, both atomically (the
  file first: a kill in between leaves a file without a record, read as one written before
  records existed)."""
  with full_disk_is_one_line(path, KEPT):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    write_atomic(checksum_path(path), f"{sha256(data)}  {path.name}\n")


# ---------------------------------------------------------------- reading

def move_aside(path: Path) -> Path:
  """Renames `path` to NAME.corrupt-<UTC time> beside it (a free name); returns the new path."""
  stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
  target = path.with_name(f"{path.name}{CORRUPT_INFIX}{stamp}")
  n = 1
  while target.exists():
    target = path.with_name(f"{path.name}{CORRUPT_INFIX}{stamp}-{n}")
    n += 1
  os.rename(path, target)
  return target


def _reason(e: BaseException) -> str:
  text = " ".join(str(e).split())
  if len(text) > 160:
    text = text[:157] + "..."
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _warn_moved(path: Path, what: str, moved: Path, remedy: str) -> None:
  print(f"warning: {path}: {what}; moved aside to {moved.name}, {remedy}", file=sys.stderr)


def recorded_sha256(path: Path) -> str | None:
  """The sha256 recorded beside `path` by `save_checked`, or None when there is none. A
  record that is not one well-formed line for this file is itself moved aside (with one
  warning) and counts as none."""
  record = checksum_path(path)
  try:
    text = record.read_bytes().decode("ascii")
    match = _CHECKSUM_LINE.fullmatch(text)
    if not match or match.group(2) != path.name:
      raise CorruptFile(f"not one line '<sha256>  {path.name}'")
    return match.group(1)
  except FileNotFoundError:
    return None
  except (CorruptFile, UnicodeDecodeError) as e:
    what, remedy = f"unreadable checksum record ({_reason(e)})", f"{path.name} is checked by reading it alone"
    try:
      _warn_moved(record, what, move_aside(record), remedy)
    except FileNotFoundError:
      pass  # moved by another process meanwhile
    except OSError as e2:
      print(f"warning: {record}: {what}; cannot move it aside ({_reason(e2)}), {remedy}", file=sys.stderr)
    return None


def _identity(path: Path):
  try:
    st = path.stat()
  except FileNotFoundError:
    return None
  return st.st_ino, st.st_size, st.st_mtime_ns


def load_guarded(path: Path, load: Callable[[Path], T], remedy: str = "generating it again"
                 ) -> T | None:
  """`load(path)`, or None when `path` is missing or bad. `load` must read the whole file
  and raise on anything wrong with it. Bad means: its recorded sha256 (`save_checked`)
  differs, or `load` raises (e.g. BadZipFile, EOFError, a ValueError, a parse error). A bad
  file is moved aside (`move_aside`) with one warning line on stderr that names it, says
  what was wrong and ends with `remedy`; the caller then makes it again as if missing.
  A file that cannot be read for want of permission is an error, not a bad file; a bad file
  that cannot be moved aside is a one-line UserError."""
  for _ in range(2):
    before = _identity(path)
    if before is None:
      return None
    try:
      want = recorded_sha256(path)
      if want is not None:
        got = sha256(path.read_bytes())
        if got != want:
          raise CorruptFile(f"sha256 {got[:16]}... is not the recorded {want[:16]}...")
      return load(path)
    except PermissionError:
      raise
    except Exception as e:  # noqa: BLE001 (whatever a broken file makes the reader raise)
      error = e
    after = _identity(path)
    if after is None:
      return None  # moved aside or removed by another process meanwhile
    if after != before:
      continue  # replaced (atomically) by another process meanwhile: read the new file
    try:
      moved = move_aside(path)
    except FileNotFoundError:
      return None
    except OSError as e:
      raise UserError(f"{path}: corrupt cache file ({_reason(error)}), and it cannot be moved "
                      f"aside ({_reason(e)}); move it away by hand") from None
    _warn_moved(path, f"corrupt cache file ({_reason(error)})", moved, remedy)
    return None
  return None


def load_npz(path: Path, keys: Iterable[str] = ()) -> dict[str, np.ndarray]:
  """Every array of the .npz at `path`, each read whole (so its zip CRC-32 is checked); a
  CorruptFile when one of `keys` is missing."""
  with np.load(path, allow_pickle=False) as z:
    arrays = {k: z[k] for k in z.files}
  missing = [k for k in keys if k not in arrays]
  if missing:
    raise CorruptFile(f"arrays {', '.join(missing)} missing")
  return arrays
