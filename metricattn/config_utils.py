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
