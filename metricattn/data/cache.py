"""Where generated data sets are cached, and how a cache file is written.

The root is $METRICATTN_DATA, else ~/.cache/metricattn; each generator keeps its files in
a folder of its own below it (`meshes/`, `listops/`) and names them by every setting that
changes their content, so a changed setting never reads a stale file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from metricattn.fileio import write_atomic

DATA_ENV = "METRICATTN_DATA"


def data_root() -> Path:
  """$METRICATTN_DATA, else ~/.cache/metricattn."""
  root = os.environ.get(DATA_ENV)
  return Path(root) if root else Path.home() / ".cache" / "metricattn"


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
  """Writes one .npz atomically (`fileio.write_atomic`), so that a reader never sees half a
  file and concurrent writers of the same file do not clash."""
  path.parent.mkdir(parents=True, exist_ok=True)
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  write_atomic(path, buf.getvalue())
