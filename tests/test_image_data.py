"""Image data: IDX files written here, sklearn digits, tfds via mock data; never the network."""

import dataclasses
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from ml_collections import ConfigDict

from metricattn.data import get_dataset, idx, images, tfds_source
from metricattn.errors import UserError

DEBIAN_FASHION = Path(images.SPECS["fashion_mnist"].debian_dir)


def make_config(name: str, source: str, **data) -> ConfigDict:
  fields = dict(name=name, source=source, data_dir="", download=False, val_size=0,
                batch_size=8, augment=False, crop_padding=4)
  fields.update(data)
  return ConfigDict(dict(seed=0, data=fields,
                         eval=dict(mode="plain", batch_size=16, context_size=4)))


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
  """Any attempt to prepare (download) a tfds dataset fails the test at once."""
  def refuse(*args, **kwargs):
    raise AssertionError("a test tried to download a tfds dataset")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)


def write_idx_dir(directory: Path, n_train: int = 40, n_test: int = 12, gz: bool = True,
                  shape: tuple[int, ...] = (28, 28)) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Writes random MNIST-format IDX files; returns what was written."""
  rng = np.random.default_rng(0)
  written = {}
  for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
    x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    y = (np.arange(n) % 10).astype(np.uint8)
    ext = ".gz" if gz else ""
    idx.write_idx(directory / f"{prefix}-images-idx3-ubyte{ext}", x)
    idx.write_idx(directory / f"{prefix}-labels-idx1-ubyte{ext}", y)
    written[split] = (x, y)
  return written


# --- IDX format --------------------------------------------------------------------------

def test_parse_idx_reads_a_hand_written_header():
  values = np.arange(12, dtype=np.uint8)
  data = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2, 3, 2) + values.tobytes()
  np.testing.assert_array_equal(idx.parse_idx(data), values.reshape(2, 3, 2))
  ints = np.array([1, -2, 70000], dtype=">i4")
  data = bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 3) + ints.tobytes()
  np.testing.assert_array_equal(idx.parse_idx(data), [1, -2, 70000])


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
def test_idx_roundtrip(tmp_path, suffix, dtype):
  array = (np.arange(24) - 5).reshape(2, 3, 4).astype(dtype)
  path = tmp_path / f"a{suffix}"
  idx.write_idx(path, array)
  if suffix:
    assert path.read_bytes()[:2] == b"\x1f\x8b"
  back = idx.read_idx(path)
  assert back.dtype == array.dtype
  np.testing.assert_array_equal(back, array)


def test_idx_rejects_bad_and_truncated_files(tmp_path):
  (tmp_path / "bad").write_bytes(b"PK\x03\x04junk")
  with pytest.raises(UserError, match="not an IDX file"):
    idx.read_idx(tmp_path / "bad")
  data = bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10) + bytes(5)
  (tmp_path / "short.gz").write_bytes(gzip.compress(data))
  with pytest.raises(UserError, match="truncated"):
    idx.read_idx(tmp_path / "short.gz")


# --- idx source ----------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_idx_dataset_from_written_files(tmp_path, gz):
  written = write_idx_dir(tmp_path, gz=gz)
  ds = get_dataset(make_config("mnist", "idx", data_dir=str(tmp_path)))
  assert ds.info == {"num_classes": 10, "input_shape": (28, 28, 1), "num_train": 40}
  assert ds.eval_splits == ("test",)
  x, y = ds.splits["test"]
  assert x.shape == (12, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int32
  raw_x, raw_y = written["test"]
  np.testing.assert_array_equal(y, raw_y)
  expected = (raw_x[..., None] / 255.0 - 0.1307) / 0.3081
  np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)
  batch = ds.train_batch(0)
  assert batch["x"].shape == (8, 28, 28, 1) and batch["y"].shape == (8,)
  eval_batch = next(ds.eval_batches("test"))
  assert eval_batch["x"].shape == (16, 28, 28, 1) and "mask" not in eval_batch
  assert eval_batch["weight"].sum() == 12


def test_idx_dotted_names_and_rgb(tmp_path):
  rng = np.random.default_rng(1)
  for prefix, n in (("train", 6), ("t10k", 3)):
    idx.write_idx(tmp_path / f"{prefix}-images.idx3-ubyte",
                  rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
    idx.write_idx(tmp_path / f"{prefix}-labels.idx1-ubyte", np.arange(n, dtype=np.uint8))
  ds = get_dataset(make_config("cifar10", "idx", data_dir=str(tmp_path), batch_size=2))
  assert ds.info["input_shape"] == (32, 32, 3)


def test_idx_missing_files_fail_in_one_line(tmp_path):
  with pytest.raises(UserError) as err:
    get_dataset(make_config("mnist", "idx", data_dir=str(tmp_path)))
  message = str(err.value)
  assert "\n" not in message
  assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
  with pytest.raises(UserError, match="not a directory"):
    get_dataset(make_config("mnist", "idx", data_dir=str(tmp_path / "nope")))
  with pytest.raises(UserError, match="needs data.data_dir"):
    get_dataset(make_config("mnist", "idx"))


def test_idx_wrong_channels_and_labels(tmp_path):
  write_idx_dir(tmp_path, shape=(28, 28))
  with pytest.raises(UserError, match="channel"):
    get_dataset(make_config("cifar10", "idx", data_dir=str(tmp_path)))
  idx.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(12, 10, np.uint8))
  with pytest.raises(UserError, match="labels must lie in 0..9"):
    get_dataset(make_config("mnist", "idx", data_dir=str(tmp_path)))


def test_fashion_mnist_missing_debian_package_says_how_to_get_it(monkeypatch, tmp_path):
  spec = dataclasses.replace(images.SPECS["fashion_mnist"], debian_dir=str(tmp_path / "none"))
  monkeypatch.setitem(images.SPECS, "fashion_mnist", spec)
  with pytest.raises(UserError) as err:
    get_dataset(make_config("fashion_mnist", "idx"))
  assert "apt-get install dataset-fashion-mnist" in str(err.value)
  assert "\n" not in str(err.value)


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package():
  ds = get_dataset(make_config("fashion_mnist", "idx", val_size=5000))
  assert ds.info["input_shape"] == (28, 28, 1) and ds.info["num_train"] == 55000
  assert {k: len(v[1]) for k, v in ds.splits.items()} == {
      "train": 55000, "val": 5000, "test": 10000}
  x = ds.splits["train"][0]
  assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1.0) < 0.01


# --- digits --------------------------------------------------------------------------------

def test_digits():
  ds = get_dataset(make_config("digits", "digits", val_size=100))
  sizes = {k: len(v[1]) for k, v in ds.splits.items()}
  assert sizes == {"train": 1337, "val": 100, "test": 360}
  assert ds.info["input_shape"] == (8, 8, 1)
  assert ds.eval_splits == ("val", "test")
  x = ds.splits["train"][0]
  assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1.0) < 0.05


def test_source_must_fit_name():
  with pytest.raises(UserError, match="cannot provide digits"):
    get_dataset(make_config("digits", "tfds"))
  with pytest.raises(UserError, match="cannot provide mnist"):
    get_dataset(make_config("mnist", "digits"))
  with pytest.raises(UserError, match="unknown data.source"):
    get_dataset(make_config("mnist", "web"))
  with pytest.raises(UserError, match="unknown dataset"):
    get_dataset(make_config("imagenet", "tfds"))


# --- validation split ----------------------------------------------------------------------

def test_val_split_is_fixed_disjoint_and_from_train():
  a = get_dataset(make_config("digits", "digits", val_size=200))
  config = make_config("digits", "digits", val_size=200)
  config.seed = 5
  b = get_dataset(config)
  for split in ("train", "val", "test"):
    np.testing.assert_array_equal(a.splits[split][0], b.splits[split][0])
  full = get_dataset(make_config("digits", "digits"))
  whole = full.splits["train"][0].reshape(len(full.splits["train"][0]), -1)
  parts = [a.splits[s][0].reshape(len(a.splits[s][0]), -1) for s in ("train", "val")]
  rows = {r.tobytes() for r in whole}
  assert all(r.tobytes() in rows for p in parts for r in p)
  assert not {r.tobytes() for r in parts[0]} & {r.tobytes() for r in parts[1]}
  np.testing.assert_array_equal(a.splits["test"][0], full.splits["test"][0])
  with pytest.raises(UserError, match="val_size"):
    get_dataset(make_config("digits", "digits", val_size=5000))


# --- tfds ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)),
                                        ("fashion_mnist", (28, 28, 1)),
                                        ("cifar10", (32, 32, 3))])
def test_tfds_with_mock_data(monkeypatch, name, shape):
  # mock_data keeps no prepared files on disk, so the on-disk check is bypassed here; it is
  # tested against a real empty directory below.
  monkeypatch.setattr(tfds_source, "unprepared_reason", lambda builder: None)
  with tfds.testing.mock_data(num_examples=20):
    ds = get_dataset(make_config(name, "tfds", data_dir="/nonexistent", val_size=4))
  assert ds.info == {"num_classes": 10, "input_shape": shape, "num_train": 16}
  assert {k: v[0].shape[0] for k, v in ds.splits.items()} == {"train": 16, "val": 4,
                                                             "test": 20}
  assert ds.train_batch(1)["x"].shape == (8, *shape)


def test_tfds_unprepared_fails_fast_with_the_command(tmp_path):
  with pytest.raises(UserError) as err:
    get_dataset(make_config("mnist", "tfds", data_dir=str(tmp_path)))
  message = str(err.value)
  assert "\n" not in message
  assert f"tfds build mnist --data_dir={tmp_path} --file_format=array_record" in message
  assert "data.source=idx" in message


def test_tfds_download_without_tensorflow_is_a_user_error(tmp_path):
  import importlib.util
  if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("tensorflow installed: download would be attempted")
  with pytest.raises(UserError, match="pip install tensorflow"):
    get_dataset(make_config("cifar10", "tfds", data_dir=str(tmp_path), download=True))


# --- augmentation --------------------------------------------------------------------------

def reference_crop_flip(x, dy, dx, flip, padding):
  padded = np.pad(x, ((padding, padding), (padding, padding), (0, 0)))
  out = padded[dy:dy + x.shape[0], dx:dx + x.shape[1]]
  return out[:, ::-1] if flip else out


def test_crop_flip_matches_a_plain_loop():
  x = np.random.default_rng(0).normal(size=(6, 5, 7, 3)).astype(np.float32)
  out = images.crop_flip(x, np.random.default_rng(3), padding=2)
  rng = np.random.default_rng(3)
  dy, dx = rng.integers(0, 5, size=(2, 6))
  flip = rng.random(6) < 0.5
  for i in range(6):
    np.testing.assert_array_equal(out[i], reference_crop_flip(x[i], dy[i], dx[i], flip[i], 2))
  assert out.shape == x.shape and out.dtype == x.dtype


def test_augmentation_is_a_pure_function_of_seed_and_step():
  plain = get_dataset(make_config("digits", "digits"))
  a = get_dataset(make_config("digits", "digits", augment=True, crop_padding=2))
  b = get_dataset(make_config("digits", "digits", augment=True, crop_padding=2))
  for step in (0, 7, 500):
    batch_a, batch_b = a.train_batch(step), b.train_batch(step)
    np.testing.assert_array_equal(batch_a["x"], batch_b["x"])
    np.testing.assert_array_equal(batch_a["y"], plain.train_batch(step)["y"])
    assert not np.array_equal(batch_a["x"], plain.train_batch(step)["x"])
  assert not np.array_equal(a.train_batch(1)["x"], a.train_batch(2)["x"])
