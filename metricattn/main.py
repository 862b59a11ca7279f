"""Flags only: `python -m metricattn.main --config=configs/moons_ipn.py:attention=metric --workdir=runs/x`.

Override any config value with `--config.a.b=value` (the config is locked, so a misspelt
key is an error). Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from metricattn.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path:args).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


def enable_compilation_cache() -> None:
  """Persistent XLA cache: repeated runs of the same shapes compile in a fraction of the time."""
  import os
  import jax
  path = os.environ.get("METRICATTN_XLA_CACHE", os.path.expanduser("~/.cache/metricattn/xla"))
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def run(fn, *args) -> None:
  """Calls fn(*args); a UserError becomes one line on stderr and exit code 2."""
  try:
    fn(*args)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def main(argv) -> None:
  del argv
  enable_compilation_cache()
  from metricattn.train import train_and_evaluate
  run(train_and_evaluate, _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
