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


def say(line: str) -> None:
  """Prints a progress line on stdout. When stdout is a closed pipe (`sweep ... | head -3`),
  stdout goes to /dev/null from then on and the command carries on: no BrokenPipeError."""
  try:
    print(line, flush=True)
  except BrokenPipeError:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


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


def _remove_broken_xla_entries(directory: str, grace_s: float = 10.0) -> None:
  """Removes the entries of the XLA cache at `directory` that JAX cannot read: files NAME-cache
  (JAX writes one per program, compressed, in place) that are empty, unreadable, or start
  with zero bytes (no zlib or zstd stream does), older than `grace_s` (younger ones may be a
  write in progress). JAX never replaces an entry that exists, so each of these would warn on
  every later run. One line on stderr when any is removed. A directory scan: one stat (and
  one 8-byte read) per entry; an entry cut short elsewhere is not detected."""
  import time
  try:
    entries = list(os.scandir(directory))
  except OSError:
    return
  removed, now = [], time.time()
  for entry in entries:
    if not entry.name.endswith("-cache"):
      continue
    try:
      st = entry.stat(follow_symlinks=False)
      if not entry.is_file(follow_symlinks=False) or now - st.st_mtime < grace_s:
        continue
      try:
        with open(entry.path, "rb") as f:
          head = f.read(8)
      except PermissionError:
        head = b""
      if head.strip(b"\0"):
        continue
      os.unlink(entry.path)
      removed.append(entry.name)
    except OSError:
      continue  # removed by another process meanwhile, or not ours to remove
  if removed:
    print(f"warning: XLA cache {directory}: removed {len(removed)} broken entr"
          f"{'y' if len(removed) == 1 else 'ies'} (empty, zeroed or unreadable, left by an "
          f"interrupted write; JAX compiles them again): {', '.join(removed[:3])}"
          f"{', ...' if len(removed) > 3 else ''}", file=sys.stderr)


def enable_compilation_cache() -> None:
  """Persistent XLA cache: repeated runs of the same shapes compile in a fraction of the time.
  Entries an interrupted write left empty or zeroed are removed first (one line)."""
  import logging
  import jax
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
  _remove_broken_xla_entries(xla_cache_dir())
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
