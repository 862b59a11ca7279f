"""The IDX file format of MNIST-style datasets (MNIST, Fashion-MNIST, ...), in NumPy.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values in big-endian C order.
Files may be gzip-compressed. A dataset directory holds

  train-images-idx3-ubyte[.gz]  uint8 [n, height, width] (or [n, height, width, channels])
  train-labels-idx1-ubyte[.gz]  uint8 [n]
  t10k-images-idx3-ubyte[.gz]   the test split, same layout
  t10k-labels-idx1-ubyte[.gz]

(`train-images.idx3-ubyte`, with a dot, is accepted too.)
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from metricattn.errors import UserError

# IDX type code -> NumPy dtype (big-endian where it matters).
_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {(dtype.kind, dtype.itemsize): code for code, dtype in _DTYPES.items()}
SPLIT_PREFIXES = {"train": "train", "test": "t10k"}
_PARTS = {"images": "idx3", "labels": "idx1"}


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
  """Decodes the bytes of one (uncompressed) IDX file into an array of its shape."""
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
    raise UserError(f"{name} is not an IDX file (bad magic number {data[:4].hex()})")
  dtype, ndim = _DTYPES[data[2]], data[3]
  header = 4 + 4 * ndim
  shape = struct.unpack(f">{ndim}I", data[4:header])
  expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(data) != expected:
    raise UserError(f"{name} is truncated or corrupt: shape {shape} needs {expected} bytes, "
                    f"file has {len(data)}")
  values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
  return values.astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
  """Reads an IDX file, gzip-compressed or not (detected from its content)."""
  raw = Path(path).read_bytes()
  if raw[:2] == b"\x1f\x8b":
    raw = gzip.decompress(raw)
  return parse_idx(raw, str(path))


def write_idx(path: str | Path, array: np.ndarray) -> None:
  """Writes `array` as an IDX file; gzip-compressed when `path` ends in `.gz`."""
  array = np.asarray(array)
  code = _CODES.get((array.dtype.kind, array.dtype.itemsize))
  if code is None:
    raise ValueError(f"IDX cannot hold dtype {array.dtype}")
  header = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
  data = header + np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
  path = Path(path)
  path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def find_idx_file(directory: Path, split: str, part: str) -> Path | None:
  """The file of `split` (train/test) and `part` (images/labels) in `directory`, or None."""
  prefix, kind = SPLIT_PREFIXES[split], _PARTS[part]
  for sep in ("-", "."):
    for suffix in (".gz", ""):
      path = directory / f"{prefix}-{part}{sep}{kind}-ubyte{suffix}"
      if path.is_file():
        return path
  return None


def missing_idx_files(directory: Path) -> list[str]:
  """Names of the expected IDX files not found in `directory` (empty if all are there)."""
  return [f"{SPLIT_PREFIXES[s]}-{p}-{_PARTS[p]}-ubyte[.gz]"
          for s in SPLIT_PREFIXES for p in _PARTS if find_idx_file(directory, s, p) is None]


def load_idx_dir(directory: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Reads a directory of IDX files -> {"train": (images, labels), "test": (...)}.

  Images keep their stored dtype and shape ([n, H, W] or [n, H, W, C]); labels are [n].
  Raises UserError when a file is missing or the images and labels do not agree.
  """
  directory = Path(directory)
  missing = missing_idx_files(directory)
  if missing:
    raise UserError(f"IDX files missing in {directory}: {', '.join(missing)}")
  splits = {}
  for split in SPLIT_PREFIXES:
    images = read_idx(find_idx_file(directory, split, "images"))
    labels = read_idx(find_idx_file(directory, split, "labels"))
    if images.ndim not in (3, 4) or labels.ndim != 1 or len(images) != len(labels):
      raise UserError(f"IDX {split} split in {directory} does not agree: images "
                      f"{images.shape} (want [n, H, W] or [n, H, W, C]), labels {labels.shape}")
    splits[split] = (images, labels)
  return splits
