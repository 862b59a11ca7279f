"""Shared test setup: a persistent XLA cache so repeated compiles are cheap; a data cache."""

import os
import sys
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = os.environ.setdefault("METRICATTN_XLA_CACHE", str(ROOT / ".cache" / "xla-tests"))
# Generated data sets (the procedural meshes) go to the repository's .cache, not ~/.cache.
os.environ.setdefault("METRICATTN_DATA", str(ROOT / ".cache" / "data-tests"))
jax.config.update("jax_compilation_cache_dir", CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


@pytest.fixture
def python():
  """The interpreter running the tests, for CLI subprocesses."""
  return sys.executable
