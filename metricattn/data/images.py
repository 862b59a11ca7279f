"""Image classification data: MNIST, Fashion-MNIST, CIFAR-10 and scikit-learn's 8x8 digits.

One entry point, `ImageData(config)`, selected by `config.data.name` and `config.data.source`.
Images are float32 [n, H, W, C], normalised per dataset to zero mean and unit variance per
channel (fixed constants of the training split); labels are int32 [n]. Set models (the IPN)
flatten the images themselves. Everything is held in memory as NumPy arrays (CIFAR-10 takes
about 0.7 GB as float32), so batch order is a pure function of (seed, step) and resume is
exact; see `metricattn.data.arrays`.

Config fields read:
  seed               int   run seed: training batch order and augmentation.
  data.name          str   mnist | fashion_mnist | cifar10 | digits.
  data.source        str   where the data comes from:
                             tfds    tensorflow-datasets files (mnist, fashion_mnist, cifar10),
                                     prepared as ArrayRecord in data.data_dir.
                             idx     a directory of MNIST-format IDX files (mnist,
                                     fashion_mnist, cifar10); see `metricattn.data.idx`.
                             digits  scikit-learn's bundled digits (name digits only), offline.
  data.data_dir      str   tfds: the tfds data directory ("" = TFDS_DATA_DIR or
                           ~/tensorflow_datasets). idx: the directory of IDX files ("" =
                           Debian's /usr/share/datasets/fashion-mnist for fashion_mnist, from
                           `apt-get install dataset-fashion-mnist`; required otherwise).
                           Unused by digits. Suggested default "".
  data.download      bool  tfds only: prepare a missing dataset (needs TensorFlow and the
                           network). Suggested default False: missing data is an error.
  data.val_size      int   training examples held out as the "val" split (0 = no val split).
                           The same examples for every run seed: a fixed seeded permutation of
                           the training split. Never taken from the test split. E.g. 5000.
  data.batch_size    int   training batch size (read by ArrayData).
  data.augment       bool  random crop (after zero padding, i.e. mean-colour padding once
                           normalised) and horizontal flip of training batches, a pure
                           function of (seed, step). Meant for CIFAR-10; flips do not suit
                           digits. Suggested default False (True for CIFAR-10 runs).
  data.crop_padding  int   padding in pixels before the random crop, e.g. 4; read always,
                           used when data.augment.
  eval.mode, eval.batch_size, eval.context_size   read by ArrayData (see there).

Splits: "train" (minus val), "val" (when data.val_size > 0) and "test". Digits has no
official test split: a fixed seeded 360 of its 1,797 images (20%) are the test split.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from metricattn.data.arrays import ArrayData
from metricattn.data.idx import load_idx_dir
from metricattn.errors import UserError

SOURCES = ("tfds", "idx", "digits")
NUM_CLASSES = 10
SPLIT_SEED = 0            # fixed: the val split and the digits test split never change
DIGITS_TEST_SIZE = 360
_AUGMENT_STREAM = 7       # separates augmentation randomness from batch order


@dataclasses.dataclass(frozen=True)
class ImageSpec:
  """What is known about one dataset.

  sources: data.source values that can provide it.
  max_value: largest raw pixel value (255, or 16 for digits).
  mean, std: per-channel statistics of `pixel / max_value` over the training split.
  tfds_name: the tensorflow-datasets builder name.
  debian_dir, apt_package: where a Debian package installs its IDX files.
  num_train: size of the official training split (before data.val_size is carved from it),
    for configs that turn epochs into steps.
  """
  sources: tuple[str, ...]
  max_value: float
  mean: tuple[float, ...]
  std: tuple[float, ...]
  tfds_name: str = ""
  debian_dir: str = ""
  apt_package: str = ""
  num_train: int = 0


SPECS = {
    "mnist": ImageSpec(("tfds", "idx"), 255.0, (0.1307,), (0.3081,), "mnist",
                       num_train=60_000),
    "fashion_mnist": ImageSpec(("tfds", "idx"), 255.0, (0.2860,), (0.3530,), "fashion_mnist",
                               "/usr/share/datasets/fashion-mnist", "dataset-fashion-mnist",
                               num_train=60_000),
    "cifar10": ImageSpec(("tfds", "idx"), 255.0, (0.4914, 0.4822, 0.4465),
                         (0.2470, 0.2435, 0.2616), "cifar10", num_train=50_000),
    "digits": ImageSpec(("digits",), 16.0, (0.3053,), (0.3760,),
                        num_train=1_797 - DIGITS_TEST_SIZE),
}
NAMES = tuple(SPECS)

# The data.source of each dataset when a config's `source=` is empty: Fashion-MNIST from
# Debian's dataset-fashion-mnist (offline), MNIST and CIFAR-10 through tensorflow-datasets,
# digits from scikit-learn.
DEFAULT_SOURCES = {"fashion_mnist": "idx", "mnist": "tfds", "cifar10": "tfds",
                   "digits": "digits"}

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def image_spec(name: str, source: str) -> ImageSpec:
  """The spec of dataset `name`, checking that `source` can provide it."""
  if name not in SPECS:
    raise UserError(f"unknown image dataset {name!r}; allowed: {', '.join(NAMES)}")
  spec = SPECS[name]
  if source not in spec.sources:
    raise UserError(f"data.source {source!r} cannot provide {name}; allowed for {name}: "
                    f"{', '.join(spec.sources)}")
  return spec


def image_source(name: str, source: str = "") -> str:
  """`source`, or the dataset's default source when empty; UserError for an unknown dataset."""
  if name not in DEFAULT_SOURCES:
    raise UserError(f"unknown image dataset {name!r}; allowed: {', '.join(DEFAULT_SOURCES)}")
  return source or DEFAULT_SOURCES[name]


def digits_splits() -> Splits:
  """scikit-learn's 8x8 digits: {"train": 1437, "test": 360} images [n, 8, 8] in 0..16."""
  from sklearn.datasets import load_digits
  digits = load_digits()
  perm = np.random.default_rng(SPLIT_SEED).permutation(len(digits.target))
  test, train = np.sort(perm[:DIGITS_TEST_SIZE]), np.sort(perm[DIGITS_TEST_SIZE:])
  return {"train": (digits.images[train], digits.target[train]),
          "test": (digits.images[test], digits.target[test])}


def idx_directory(name: str, data_dir: str, spec: ImageSpec) -> Path:
  """The IDX directory: data.data_dir, else the Debian package's directory if there is one."""
  if data_dir:
    path = Path(data_dir).expanduser()
    if not path.is_dir():
      raise UserError(f"data.data_dir {data_dir} is not a directory (want a directory of "
                      "IDX files such as train-images-idx3-ubyte.gz)")
    return path
  if not spec.debian_dir:
    raise UserError(f"data.source=idx for {name} needs data.data_dir, a directory of IDX files "
                    "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-...)")
  path = Path(spec.debian_dir)
  if not path.is_dir():
    raise UserError(f"{name} IDX files not found in {path}; get them with `sudo apt-get install "
                    f"{spec.apt_package}`, or set data.data_dir to a directory of IDX files")
  return path


def load_raw(name: str, source: str, data_dir: str, download: bool) -> Splits:
  """{"train", "test"} -> (raw images [n, H, W, C] in 0..max_value, int32 labels [n])."""
  spec = image_spec(name, source)
  if source == "digits":
    raw = digits_splits()
  elif source == "idx":
    raw = load_idx_dir(idx_directory(name, data_dir, spec))
  else:
    from metricattn.data.tfds_source import load_tfds
    raw = load_tfds(spec.tfds_name, data_dir, download)
  return {split: _check_images(name, x, y, spec) for split, (x, y) in raw.items()}


def _check_images(name: str, x: np.ndarray, y: np.ndarray, spec: ImageSpec
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Adds the channel axis to [n, H, W] images; checks channels and label range."""
  x = x[..., None] if x.ndim == 3 else x
  channels = len(spec.mean)
  if x.shape[-1] != channels:
    raise UserError(f"{name} images have shape {x.shape[1:]}; expected {channels} channel(s)")
  y = np.asarray(y).astype(np.int32)
  if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
    raise UserError(f"{name} labels must lie in 0..{NUM_CLASSES - 1}; found {y.min()}..{y.max()}")
  return x, y


def carve_val(x: np.ndarray, y: np.ndarray, val_size: int) -> Splits:
  """Splits training data into {"train", "val"} by a fixed seeded permutation (order kept)."""
  if not 0 <= val_size < len(x):
    raise UserError(f"data.val_size must be in 0..{len(x) - 1}; got {val_size}")
  perm = np.random.default_rng(SPLIT_SEED).permutation(len(x))
  val, train = np.sort(perm[:val_size]), np.sort(perm[val_size:])
  return {"train": (x[train], y[train]), "val": (x[val], y[val])}


def normalize(x: np.ndarray, spec: ImageSpec) -> np.ndarray:
  """Raw images [n, H, W, C] -> float32 `(x / max_value - mean) / std` per channel."""
  out = x.astype(np.float32)
  out /= spec.max_value
  out -= np.asarray(spec.mean, np.float32)
  out /= np.asarray(spec.std, np.float32)
  return out


def crop_flip(x: np.ndarray, rng: np.random.Generator, padding: int,
              rows: slice = slice(None), total: int | None = None) -> np.ndarray:
  """Random crop after zero padding by `padding` pixels, then random horizontal flip.

  x [batch, H, W, C] -> [batch, H, W, C]; one crop offset and one coin per image. When x is
  only the `rows` of a batch of `total` images, `rng` draws for the whole batch and x gets
  its rows' draws, so a batch split over processes is augmented as the whole one.
  """
  b, h, w, _ = x.shape
  n = b if total is None else total
  padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  dy, dx = rng.integers(0, 2 * padding + 1, size=(2, n))[:, rows]
  flip = (rng.random(n) < 0.5)[rows]
  ys = dy[:, None] + np.arange(h)[None, :]
  xs = dx[:, None] + np.where(flip[:, None], np.arange(w)[::-1], np.arange(w))
  return padded[np.arange(b)[:, None, None], ys[:, :, None], xs[:, None, :]]


class ImageData(ArrayData):
  """An image dataset from `config` (fields: see the module docstring)."""

  def __init__(self, config):
    d = config.data
    name, source = d.name, d.source
    if source not in SOURCES:
      raise UserError(f"unknown data.source {source!r}; allowed: {', '.join(SOURCES)}")
    val_size, self.augment, self.padding = int(d.val_size), bool(d.augment), int(d.crop_padding)
    if self.padding < 0:
      raise UserError(f"data.crop_padding must be >= 0; got {self.padding}")
    raw = load_raw(name, source, str(d.data_dir), bool(d.download))
    spec = SPECS[name]
    splits = carve_val(*raw["train"], val_size) if val_size else {"train": raw["train"]}
    splits["test"] = raw["test"]
    splits = {k: (normalize(x, spec), y) for k, (x, y) in splits.items()}
    eval_splits = ("val", "test") if val_size else ("test",)
    super().__init__(config, splits, num_classes=NUM_CLASSES, eval_splits=eval_splits)

  def resident_arrays(self) -> dict[str, np.ndarray] | None:
    return None if self.augment else super().resident_arrays()

  def train_batch(self, step: int, rows: slice = slice(None)) -> dict[str, np.ndarray]:
    """Training batch `step` (or its `rows`): x float32 [batch, H, W, C], y int32 [batch]."""
    batch = super().train_batch(step, rows)
    if self.augment:
      rng = np.random.default_rng([self.seed, step, _AUGMENT_STREAM])
      batch["x"] = crop_flip(batch["x"], rng, self.padding, rows, self.batch_size)
    return batch
