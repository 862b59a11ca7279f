"""Shared test setup: a persistent XLA cache so repeated compiles are cheap; a data cache;
message catalogues for the debian_l10n data set."""

import os
import sys
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = os.environ.setdefault("METRICATTN_XLA_CACHE", str(ROOT / ".cache" / "xla-tests"))
# Generated data sets (the procedural meshes) go to the repository's .cache, not ~/.cache.
os.environ.setdefault("METRICATTN_DATA", str(ROOT / ".cache" / "data-tests"))
# Message catalogues for the debian_l10n data set: the tests compile their own.
LOCALE = ROOT / ".cache" / "locale-tests"
os.environ["METRICATTN_LOCALE_DIR"] = str(LOCALE)
from tests.helpers import write_l10n_catalogues  # noqa: E402
write_l10n_catalogues(LOCALE)
jax.config.update("jax_compilation_cache_dir", CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


@pytest.fixture
def python():
  """The interpreter running the tests, for CLI subprocesses."""
  return sys.executable


@pytest.fixture
def fast_compile():
  """XLA without most optimisations for a test of tiny programs, which then compile faster
  (as flax's wmt example tests do); a whole module asks for it with
  `pytestmark = pytest.mark.usefixtures("fast_compile")`."""
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", before)
