"""Accuracy of trained classifiers under input noise and L-infinity attacks (beyond the paper).

  python -m metricattn.robustness --workdir=RUN          # one run: RUN/robustness.json
  python -m metricattn.robustness --workdir=ROOT         # every run below ROOT, then
                                                         # ROOT/robustness.{json,md,png}

The paper's "robustness" is the spread of accuracy over seeds; this adds Gaussian input
noise and FGSM / PGD L-infinity attacks (`metricattn.attacks`, which also describes the units
and what is perturbed) to trained runs, and writes per-run results, tables and a figure.

The checkpoint is the run's latest: RUN/checkpoints, or for seeds trained vmapped in one
program (`--seeds`, `sweep --vmap-seeds`) the stacked checkpoint in RUN/../checkpoints,
whose slice i belongs to the i-th smallest seed=N sibling. The clean accuracy is checked
against the run's summary.json when the checkpoint is the final one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metricattn.attacks import EPSILONS, SIGMAS, Settings
from metricattn.cli import error
from metricattn.errors import UserError
from metricattn.robustness_eval import run


def floats(text: str) -> tuple[float, ...]:
  return tuple(float(v) for v in text.split(",") if v)


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m metricattn.robustness", description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True, type=Path, help="a run, or a root of runs")
  p.add_argument("--split", default="test")
  p.add_argument("--sigmas", type=floats, default=SIGMAS, help="comma-separated")
  p.add_argument("--eps", type=floats, default=EPSILONS, help="comma-separated")
  p.add_argument("--pgd-steps", type=int, default=10)
  p.add_argument("--max-examples", type=int, default=0,
                 help="evaluate whole evaluation batches until at least this many examples "
                      "(so it is rounded up to a multiple of the evaluation batch; the report "
                      "states the count); 0 = the whole split")
  p.add_argument("--force", action="store_true", help="recompute existing robustness.json")
  a = p.parse_args(argv)
  settings = Settings(a.split, a.sigmas, a.eps, a.pgd_steps, a.max_examples)
  from metricattn.cli import enable_compilation_cache
  enable_compilation_cache()
  try:
    print(run(a.workdir, settings, a.force))
  except UserError as e:
    return error(str(e))
  return 0


if __name__ == "__main__":
  sys.exit(main())
