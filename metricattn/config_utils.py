"""Config helpers shared by the files in configs/, the scripts and the tests (big_vision style)."""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

import ml_collections

from metricattn.errors import UserError


def convert(key: str, text: str, like, field_type: type | None = None):
  """`text` as a value of `like`'s type (bool: true/false/1/0), or of `field_type` (a None
  field's declared type, e.g. str for `model.implementation`); None of unknown type: float."""
  if isinstance(like, bool):
    if text.lower() not in ("true", "false", "1", "0"):
      raise UserError(f"config value {key}={text!r} must be true or false")
    return text.lower() in ("true", "1")
  kind = type(like) if like is not None else (
      field_type if field_type not in (None, type(None)) else float)
  try:
    return kind(text)
  except ValueError:
    raise UserError(f"config value {key}={text!r} must be a {kind.__name__}") from None


def dotted_keys(config, prefix: str = "") -> list[str]:
  """'a.b' for every leaf of a ConfigDict."""
  keys = []
  for k, v in config.items():
    keys += (dotted_keys(v, f"{prefix}{k}.") if isinstance(v, ml_collections.ConfigDict)
             else [prefix + k])
  return keys


def set_override(config, key: str, value) -> None:
  """Sets `config.a.b` (key 'a.b') like --config.a.b=value: a string `value` is converted to
  the field's type, another value is set as it is. UserError for a key that is not there."""
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    node = node.get(p) if isinstance(node, ml_collections.ConfigDict) else None
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise unknown_key(config, key)
  node[leaf] = (convert(key, value, node[leaf], node.get_type(leaf)) if isinstance(value, str)
                else value)


def unknown_key(config, key: str) -> UserError:
  """The error for a dotted `key` that `config` lacks, naming its closest keys."""
  close = difflib.get_close_matches(key, dotted_keys(config))
  hint = f"; did you mean: {', '.join(close)}" if close else ""
  return UserError(f"unknown config key {key!r}{hint}")


def load_module(path):
  """The Python file at `path` as a module (config files are loaded by path, not imported)."""
  spec = importlib.util.spec_from_file_location(f"config_{Path(path).stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config_file(path, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file, as `--config=PATH:ARG` gives it (unlocked); a
  config file that fails to load or whose get_config raises is one UserError."""
  try:
    return load_module(path).get_config(arg or None)
  except UserError:
    raise
  except SyntaxError as e:
    raise UserError(f"cannot load config {path}: {e.msg} in {e.filename}, line {e.lineno}"
                    ) from None
  except Exception as e:
    raise UserError(config_failure(path, arg, e)) from None


def config_failure(path, arg: str | None, e: BaseException) -> str:
  """One line for a config file whose loading or get_config raised `e`."""
  text = " ".join(str(e).split())[:300]
  call = f"get_config({arg!r})" if arg else "get_config()"
  return f"config {path}: {call} failed: {type(e).__name__}: {text}"


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
    out[key] = convert(key, value, defaults[key])
  return ml_collections.ConfigDict(out)


def derived(fn, *sources: ml_collections.FieldReference,
            field_type: type | None = None) -> ml_collections.FieldReference:
  """A config value computed from other config values: `fn(*values of sources)`, evaluated
  when read, so that it follows an override of a source (`--config.train.steps=50`,
  `set_override`). Each source is the FieldReference that a config key holds (e.g.
  `c.train.steps = steps = ml_collections.FieldReference(400)`) or another derived value.
  Setting the derived key itself replaces the rule by the value set (ml_collections'
  `FieldReference.set`), so an explicit override of it wins over its sources.

  Each call makes a new reference: give every derived key its own call, never one reference
  to two keys (setting one would set the other). The value has the type of the first
  source unless `field_type` says otherwise (the result is then converted to it).
  """
  first, *rest = sources
  ref = first._apply_op(fn, *rest)
  if field_type is not None and field_type is not first.get_type():
    ref = ref._apply_cast_op(field_type)
  return ref


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

