"""Evaluate a run's checkpoint in a fresh process:

  python -m metricattn.evaluate --workdir=runs/x [--step latest|best|N] [--splits test,val]

Rebuilds data and model from the workdir's config.json, restores the checkpoint, evaluates,
prints the metrics and writes them to WORKDIR/evaluation.json. `best` is the kept checkpoint
with the best evaluation on the `val` split in metrics.jsonl (accuracy, else BLEU, else lowest
loss); never chosen on test data, so a run without a val split has no `best`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from metricattn import runs
from metricattn.cli import enable_compilation_cache, error
from metricattn.errors import UserError
from metricattn.runs import SELECTION_SPLIT, best_val_step
from metricattn.fileio import read_jsonl, write_atomic
from metricattn.restore import checkpoint_steps, restore


def best_step(workdir: Path, steps: list[int]) -> int:
  """The kept checkpoint step whose val evaluation scored best."""
  records = read_jsonl(workdir / "metrics.jsonl")
  if not any(r["split"] == SELECTION_SPLIT for r in records):
    raise UserError(f"{workdir} has no {SELECTION_SPLIT} split to select a checkpoint on "
                    "(choosing on test would leak it); use --step latest or a step number")
  step = best_val_step(records, steps)
  if step is None:
    raise UserError(f"no {SELECTION_SPLIT} evaluation in {workdir / 'metrics.jsonl'} at a "
                    f"kept checkpoint (steps {sorted(steps)}); use --step latest or a step "
                    "number")
  return step


def choose_step(workdir: Path, step: str, steps: list[int]) -> int:
  """The kept checkpoint step that `step` (latest, best or a number) names."""
  if not steps:
    raise UserError(f"{workdir} has no checkpoint to evaluate")
  if step == "latest":
    return max(steps)
  if step == "best":
    return best_step(workdir, steps)
  if not step.isdigit() or int(step) not in steps:
    raise UserError(f"no checkpoint at step {step} in {workdir}; kept: {sorted(steps)}")
  return int(step)


def evaluate_workdir(workdir: str | Path, step: str = "latest",
                     splits: list[str] | None = None) -> dict:
  """Evaluates a run's checkpoint (a run trained alone or one seed of vmapped seeds) and
  writes WORKDIR/evaluation.json."""
  from jax.sharding import NamedSharding, PartitionSpec as P
  from metricattn.train import evaluate, make_eval_step, make_mesh

  workdir = Path(workdir)
  runs.run_config(workdir)  # a clear error before anything else when it is not a run
  chosen = choose_step(workdir, step, checkpoint_steps(workdir))
  replicated = NamedSharding(make_mesh(), P())
  _, data, task, graphdef, params, _ = restore(workdir, chosen, replicated)
  eval_step = make_eval_step(graphdef, task)
  result = {"step": chosen}
  for split in splits or data.eval_splits:
    if split not in data.splits:
      raise UserError(f"unknown split {split!r}; this dataset has {', '.join(data.splits)}")
    metrics = evaluate(eval_step, params, data, task, graphdef, split, replicated)
    result.update({f"{split}/{k}": v for k, v in metrics.items()})
  write_atomic(workdir / "evaluation.json", json.dumps(result, indent=2) + "\n")
  return result


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m metricattn.evaluate", description="Evaluate a run's checkpoint.")
  p.add_argument("--workdir", required=True, type=Path)
  p.add_argument("--step", default="latest",
                 help="latest, best (on the val split) or a step number")
  p.add_argument("--splits", default="", help="comma-separated; default: the run's eval splits")
  a = p.parse_args(argv)
  enable_compilation_cache()
  try:
    result = evaluate_workdir(a.workdir, a.step, [s for s in a.splits.split(",") if s])
  except UserError as e:
    return error(str(e))
  print(json.dumps(result, indent=2))
  print(f"wrote {a.workdir / 'evaluation.json'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
