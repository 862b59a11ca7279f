"""Config helpers shared by the files in configs/ and the scripts (big_vision style)."""

from __future__ import annotations

import ml_collections

from metricattn.errors import UserError


def _convert(key: str, value: str, default):
  if isinstance(default, bool):
    if value.lower() not in ("true", "false", "1", "0"):
      raise UserError(f"config argument {key}={value!r} must be true or false")
    return value.lower() in ("true", "1")
  try:
    return type(default)(value) if default is not None else value
  except ValueError:
    raise UserError(f"config argument {key}={value!r} must be a {type(default).__name__}") from None


def load_config_file(path, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file, as `--config=PATH:ARG` gives it (unlocked)."""
  import importlib.util
  from pathlib import Path
  spec = importlib.util.spec_from_file_location(f"config_{Path(path).stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses 'a=1,b=x' (the part of --config after ':') into values typed like `defaults`.

  Unknown keys are an error that lists the allowed ones.
  """
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep:
      raise UserError(f"config argument {item!r} is not of the form key=value")
    if key not in defaults:
      raise UserError(f"unknown config argument {key!r}; allowed: {', '.join(defaults)}")
    out[key] = _convert(key, value, defaults[key])
  return ml_collections.ConfigDict(out)


def steps_from_epochs(epochs: float, num_examples: int, batch_size: int) -> int:
  """Training steps for `epochs` passes over `num_examples` at `batch_size` (big_vision's
  `utils.steps`): the one place where a config turns epochs into `train.steps`.

  An epoch is `num_examples // batch_size` steps, as in `metricattn.data.sampling` (each epoch
  is one seeded permutation with the remainder dropped); the result is rounded, at least 1.
  """
  if epochs <= 0:
    raise UserError(f"epochs must be positive; got {epochs}")
  if not 0 < batch_size <= num_examples:
    raise UserError(f"batch size {batch_size} must be in 1..{num_examples} (the training "
                    "examples)")
  return max(1, round(epochs * (num_examples // batch_size)))


# Where each image dataset comes from when a config's `source=` is empty: Fashion-MNIST from
# Debian's dataset-fashion-mnist (offline), MNIST and CIFAR-10 through tensorflow-datasets,
# digits from scikit-learn.
DEFAULT_IMAGE_SOURCES = {"fashion_mnist": "idx", "mnist": "tfds", "cifar10": "tfds",
                         "digits": "digits"}


def image_source(dataset: str, source: str = "") -> str:
  """`source`, or the dataset's default source when empty; UserError for an unknown dataset."""
  if dataset not in DEFAULT_IMAGE_SOURCES:
    raise UserError(f"unknown image dataset {dataset!r}; allowed: "
                    f"{', '.join(DEFAULT_IMAGE_SOURCES)}")
  return source or DEFAULT_IMAGE_SOURCES[dataset]
