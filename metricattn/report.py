"""Summarise the runs under a root into report.md, report.json and figures; reads only the
workdirs.

  python -m metricattn.report runs/moons [--target 0.95]

Runs are grouped by their path below ROOT without the `seed=N` part (one group per grid
point, e.g. `attention=metric`). The headline metric is the first of METRICS that every run
has (test accuracy, else test BLEU, ...); higher is better for all of them. Per group:
  - the final metric's mean ± std (sample std over seeds; "n = 1, no spread" for one seed),
    median, min, max;
  - the metric at the best val evaluation (the evaluation chosen on the `val` split by
    `metricattn.runs.best_val_step`, as `evaluate --step best` chooses; mean over seeds).
    Runs without a val split have no such column: choosing on test data would leak it;
  - steps to reach the target (the first evaluation at or above it; median over the seeds
    that reached it, and how many did) and the same in seconds of training time
    (steps / steps_per_second: compilation and evaluation excluded);
  - the training-loss AUC (trapezoid area under the logged training loss divided by the
    step span, i.e. the average training loss) and jitter (mean absolute change between
    consecutive logged training losses), means over seeds;
  - final training loss, steps per second, parameter count.
Each group is compared with the `softmax` group of the same grid point (the path with
`attention=softmax`): difference of means with a 95% percentile bootstrap interval (seeded),
Welch's t-test and Mann-Whitney U two-sided p-values; only groups of >= 2 seeds are compared.
Figures, titled with the experiment's title (or ROOT's name) and the metric: curves.png
(training loss and the metric over steps: mean over seeds, band min..max, markers on curves
of few points) and violin.png (final metric).

On the root of an Optuna study (`metricattn.sweep --space ...`; ROOT/study.json) the report
adds the study's best trials and Optuna's optimisation-history and parameter-importance
figures (`metricattn.study.section.study_section`).

The target comes from --target, else from ROOT/experiment.json (written by
`python -m metricattn.experiment`, which also gives the budget and command for the header).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metricattn.cli import error
from metricattn.comparison import write_report
from metricattn.errors import UserError


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m metricattn.report", description="Write ROOT/report.md from the runs under ROOT.")
  p.add_argument("root", type=Path)
  p.add_argument("--target", type=float, default=None,
                 help="metric value for 'steps to target' (default: ROOT/experiment.json's)")
  a = p.parse_args(argv)
  try:
    text = write_report(a.root, target=a.target)
  except (FileNotFoundError, UserError) as e:
    return error(str(e))
  print(text)
  print(f"wrote {a.root / 'report.md'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
