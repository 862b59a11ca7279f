"""What every written report shares: the markdown table, the number formats and the
machine description.

Figures are saved by `metricattn.plots.save` (title, layout, PNG, close).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
  """Lines of a markdown table; cells are written with str()."""
  return (["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
          + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def fmt(x: float | None, digits: int = 4) -> str:
  """A number with `digits` decimals; 'n/a' for None."""
  return "n/a" if x is None else f"{x:.{digits}f}"


def mean_std(summary: dict, digits: int = 4) -> str:
  """'mean ± std' of a summary over seeds ({'mean', 'std', 'n'}, as `stats.summarize` gives
  it), or 'mean (n = 1, no spread)' below two values: one seed has no spread."""
  mean, std = fmt(summary["mean"], digits), fmt(summary["std"], digits)
  return f"{mean} (n = 1, no spread)" if summary["n"] < 2 else f"{mean} ± {std}"


def machine_description() -> str:
  """E.g. '2-core x86_64 CPU (Intel(R) Xeon(R) ...), Linux, Python 3.11, JAX 0.10.2'."""
  model = ""
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  import jax
  return (f"{os.cpu_count()}-core {platform.machine()} CPU{f' ({model})' if model else ''}, "
          f"{platform.system()}, Python {platform.python_version()}, JAX {jax.__version__}, "
          f"backend {jax.default_backend()}")
