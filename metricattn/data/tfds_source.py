"""Image datasets from tensorflow-datasets, read once into NumPy arrays (no TensorFlow needed).

Reading uses `tfds.data_source`'s random-access ArrayRecord files, which need no TensorFlow.
Preparing them (download and encode) does need TensorFlow and the network, so nothing here
downloads unless asked: an unprepared dataset fails fast with one line naming the command
that prepares it. Reading MNIST or CIFAR-10 this way takes some seconds to a minute (every
image is decoded from PNG once).
"""

from __future__ import annotations

import importlib.util

import numpy as np

from metricattn.errors import UserError

SPLITS = ("train", "test")


def prepare_command(tfds_name: str, data_dir: str) -> str:
  """The shell command that prepares `tfds_name` as ArrayRecord files in `data_dir`."""
  return (f"pip install tensorflow && tfds build {tfds_name} --data_dir={data_dir} "
          "--file_format=array_record")


def unprepared_reason(builder) -> str | None:
  """Why `builder`'s files cannot be read with random access, or None if they can."""
  import tensorflow_datasets as tfds
  if not builder.is_prepared():
    return f"no prepared files at {builder.data_path}"
  random_access = set(tfds.core.FileFormat.with_random_access())
  formats = set(builder.info.available_file_formats())
  if not formats & random_access:
    names = ", ".join(sorted(f.value for f in formats)) or "none"
    return f"files at {builder.data_path} are in format(s) {names}, not array_record"
  return None


def _prepare(builder, tfds_name: str, data_dir: str) -> None:
  """Downloads and prepares `builder` (data.download=True); needs TensorFlow and the network."""
  if importlib.util.find_spec("tensorflow") is None:
    raise UserError(f"data.download=True cannot prepare tfds {tfds_name}: tensorflow-datasets "
                    "needs TensorFlow to encode images; run `pip install tensorflow` or "
                    "use data.source=idx")
  builder.download_and_prepare(file_format="array_record")


def _to_arrays(source) -> tuple[np.ndarray, np.ndarray]:
  """A data source of {"image", "label"} examples -> (uint8 [n, H, W, C], int32 [n])."""
  examples = [source[i] for i in range(len(source))]
  images = np.stack([np.asarray(e["image"], np.uint8) for e in examples])
  labels = np.asarray([e["label"] for e in examples], np.int32)
  return images, labels


def load_tfds(tfds_name: str, data_dir: str, download: bool
              ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{"train": (images, labels), "test": (...)} of a tfds image dataset, as NumPy arrays.

  Args:
    tfds_name: tfds builder name, e.g. "mnist", "fashion_mnist", "cifar10".
    data_dir: tfds data directory; "" means tfds's default (TFDS_DATA_DIR or
      ~/tensorflow_datasets).
    download: prepare the dataset when it is not prepared yet (needs TensorFlow, network).
  Raises UserError (one line, with the command that gets the data) when it is not prepared.
  """
  import tensorflow_datasets as tfds
  builder = tfds.builder(tfds_name, data_dir=data_dir or None)
  reason = unprepared_reason(builder)
  if reason is not None:
    root = str(builder.data_dir_root)
    if builder.is_prepared() or not download:
      raise UserError(f"tfds {tfds_name} is not available offline ({reason}); get it with "
                      f"`{prepare_command(tfds_name, root)}` (online), or set data.download=True "
                      "(needs tensorflow), or use data.source=idx with IDX files")
    _prepare(builder, tfds_name, root)
  return {split: _to_arrays(builder.as_data_source(split=split)) for split in SPLITS}
