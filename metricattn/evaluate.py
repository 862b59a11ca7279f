"""Evaluate a run's checkpoint in a fresh process:

  python -m metricattn.evaluate --workdir=runs/x [--step latest|best|N] [--splits test,val]

Rebuilds data and model from the workdir's config.json, restores the checkpoint, evaluates,
prints the metrics and writes them to WORKDIR/evaluation.json. `best` is the kept checkpoint
with the highest headline metric (accuracy, else BLEU, else lowest loss) in metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import ml_collections

from metricattn.errors import UserError
from metricattn.writers import read_jsonl


def load_config(workdir: Path) -> ml_collections.ConfigDict:
  path = workdir / "config.json"
  if not path.exists():
    raise UserError(f"{workdir} is not a run workdir: it has no config.json")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def best_step(workdir: Path, steps: list[int]) -> int:
  """The kept checkpoint step whose evaluation scored best."""
  records = [r for r in read_jsonl(workdir / "metrics.jsonl")
             if r["split"] != "train" and r["step"] in steps]
  for key, sign in (("accuracy", 1), ("bleu", 1), ("loss", -1)):
    scored = [(sign * r[key], r["step"]) for r in records if key in r]
    if scored:
      return max(scored)[1]
  raise UserError(f"no evaluation in {workdir / 'metrics.jsonl'} at a kept checkpoint "
                  f"(steps {steps}); use --step latest")


def evaluate_workdir(workdir: str | Path, step: str = "latest",
                     splits: list[str] | None = None) -> dict:
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P
  from metricattn.checkpoint import Checkpointer
  from metricattn.optim import make_optimizer
  from metricattn.train import build, evaluate, make_eval_step, make_mesh

  workdir = Path(workdir)
  config = load_config(workdir)
  ckpt = Checkpointer(workdir, config.train.keep_checkpoints)
  steps = list(ckpt.manager.all_steps())
  if not steps:
    raise UserError(f"{workdir} has no checkpoint to evaluate")
  chosen = {"latest": max(steps), "best": None}.get(step)
  if step == "best":
    chosen = best_step(workdir, steps)
  elif chosen is None:
    chosen = int(step)
    if chosen not in steps:
      raise UserError(f"no checkpoint at step {chosen} in {workdir}; kept: {sorted(steps)}")
  data, task, graphdef, params = build(config)
  replicated = NamedSharding(make_mesh(), P())
  params = ckpt.restore_params(chosen, jax.device_put(params, replicated),
                               make_optimizer(config))
  ckpt.close()
  eval_step = make_eval_step(graphdef, task)
  result = {"step": chosen}
  for split in splits or data.eval_splits:
    if split not in data.splits:
      raise UserError(f"unknown split {split!r}; this dataset has {', '.join(data.splits)}")
    metrics = evaluate(eval_step, params, data, task, graphdef, split, replicated)
    result.update({f"{split}/{k}": v for k, v in metrics.items()})
  (workdir / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
  return result


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description="Evaluate a run's checkpoint.")
  p.add_argument("--workdir", required=True, type=Path)
  p.add_argument("--step", default="latest", help="latest, best or a step number")
  p.add_argument("--splits", default="", help="comma-separated; default: the run's eval splits")
  a = p.parse_args(argv)
  from metricattn.cli import enable_compilation_cache
  enable_compilation_cache()
  try:
    result = evaluate_workdir(a.workdir, a.step, [s for s in a.splits.split(",") if s])
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(result, indent=2))
  print(f"wrote {a.workdir / 'evaluation.json'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
