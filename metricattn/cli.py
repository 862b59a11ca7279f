"""What every command line of the project shares: one-line errors and the XLA cache.

Entry points (`main`, `sweep`, `experiment`, `evaluate`, `robustness`, `report`, `theory`)
import from here; no library module imports an entry point.
"""

from __future__ import annotations

import os
import sys

from metricattn.errors import UserError

XLA_CACHE_ENV = "METRICATTN_XLA_CACHE"


def error(message: str) -> int:
  """Prints `error: message` on stderr; returns 2, the exit code of bad input."""
  print(f"error: {message}", file=sys.stderr)
  return 2


def fail(message: str) -> None:
  """`error(message)`, then exit with code 2."""
  sys.exit(error(message))


def run(fn, *args, **kwargs):
  """Calls fn(*args, **kwargs); a UserError becomes one `error:` line and exit code 2."""
  try:
    return fn(*args, **kwargs)
  except UserError as e:
    fail(str(e))


def xla_cache_dir() -> str:
  """Where the persistent XLA cache lives: $METRICATTN_XLA_CACHE or ~/.cache/metricattn/xla."""
  return os.environ.get(XLA_CACHE_ENV, os.path.expanduser("~/.cache/metricattn/xla"))


def enable_compilation_cache() -> None:
  """Persistent XLA cache: repeated runs of the same shapes compile in a fraction of the time."""
  import logging
  import jax
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
  jax.config.update("jax_compilation_cache_dir", xla_cache_dir())
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def set_cpu_devices(count: int | None) -> None:
  """Splits the host CPU into `count` devices (before JAX starts its backends)."""
  if count is None:
    return
  if count < 1:
    fail(f"--cpu_devices must be at least 1; got {count}")
  import jax
  jax.config.update("jax_num_cpu_devices", count)
