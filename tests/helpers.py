"""Helpers shared by the tests: tiny configs and running the CLI."""

import subprocess
import sys
from pathlib import Path

from metricattn.config_utils import load_config_file, load_module, set_override

ROOT = Path(__file__).resolve().parents[1]
COMMON = load_module(ROOT / "configs/common.py")  # what the config files share


def load_config(path: str, arg: str | None = None, **overrides):
  """Config from a configs/ file with dotted-key overrides, e.g. train__steps=5."""
  config = load_config_file(ROOT / path, arg)
  for key, value in overrides.items():
    set_override(config, key.replace("__", "."), value)
  return config


def tiny_moons(**overrides):
  base = dict(train__steps=40, train__log_every=10, train__eval_every=20,
              train__checkpoint_every=20)
  base.update(overrides)
  return load_config("configs/moons_ipn.py", **base)


def cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                        text=True, env=env, timeout=timeout)
