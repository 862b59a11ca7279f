"""Run one experiment of `metricattn.registry` end to end and write its report.

  python -m metricattn.experiment moons --budget quick \
      [--root runs/experiments/moons/quick] [--jobs N] [--results results/moons]
  python -m metricattn.experiment --list

Steps: check the config and the data; record the definition in ROOT/experiment.json; run the
grid (attention kinds x seeds, as `metricattn.sweep` would: `grid_runner.run_grid`; seeds
vmapped in one program where the experiment says so); for image classifiers, the robustness
evaluation (`robustness_eval.run`); the trivial baselines on the same data
(`baselines.compute`, ROOT/baselines.json; `--no-baselines` skips them); the experiment's own
figure where it has one
(`Experiment.figure`: ROOT/segmentation.png for mesh_seg); then ROOT/report.md with its
figures (`report.write_report`). Every step skips finished work, so after an interrupt the
same command finishes the experiment. `--results DIR` copies the
report and its figures to DIR. Run it from the repository root (configs and data
directories are relative to it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from metricattn import registry
from metricattn import runs as runs_lib
from metricattn.config_utils import load_config_file, set_override
from metricattn.cli import enable_compilation_cache, error
from metricattn.errors import UserError
from metricattn.fileio import write_atomic
from metricattn.grid import parse_seeds
from metricattn.grid_runner import run_grid

REPO = Path(__file__).resolve().parents[1]
# What every experiment may write into ROOT and --results copies (with its own figure).
OUTPUTS = ("report.md", "report.json", "curves.png", "violin.png", "robustness.md",
           "robustness.json", "robustness.png", "baselines.json")


def config_path(exp: registry.Experiment) -> Path:
  path = REPO / exp.config
  if not path.exists():
    raise UserError(f"experiment {exp.name} needs {exp.config}, which does not exist yet")
  return path


def load_config(exp: registry.Experiment, budget: str, kind: str):
  """The config of one grid point, with the budget's overrides, built in this process."""
  path = config_path(exp)
  _, _, args = exp.config_arg(budget).partition(":")
  config = load_config_file(path, ",".join(a for a in (args, f"attention={kind}") if a))
  for item in exp.budget(budget).overrides:
    key, _, text = item.partition("=")
    set_override(config, key, text)
  return config


def preflight(config) -> None:
  """Fails early, with one line, when the data is missing."""
  if config.data.name == "multi30k":
    from metricattn.data.translation import multi30k_texts
    multi30k_texts(config.data, (config.data.src_lang, config.data.tgt_lang))
  elif config.task == "classification":
    from metricattn.data import get_dataset
    get_dataset(config)


def grid_of(exp: registry.Experiment, budget: str, root: Path, jobs: int | None) -> dict:
  """The experiment's grid: `run_grid`'s arguments, but the seeds as `--seeds` text."""
  b = exp.budget(budget)
  return {"config": os.path.relpath(config_path(exp)) + exp.config_arg(budget)[len(exp.config):],
          "grid": [f"attention={','.join(exp.kinds_of(budget))}", *b.grid],
          "seeds": f"0:{b.seeds}",
          "root": root, "overrides": list(b.overrides), "jobs": jobs or b.jobs,
          "vmap_seeds": exp.vmap_seeds}


def sweep_args(grid: dict) -> list[str]:
  """The same grid as arguments of `python -m metricattn.sweep` (recorded in
  experiment.json: the command that reruns the runs alone)."""
  args = [f"--config={grid['config']}", "--grid", *grid["grid"], "--seeds", grid["seeds"],
          "--root", str(grid["root"]), "--jobs", str(grid["jobs"])]
  if grid["overrides"]:
    args += ["--set", *grid["overrides"]]
  return args + (["--vmap-seeds"] if grid["vmap_seeds"] else [])


def record(root: Path, exp: registry.Experiment, budget: str, sweep: list[str],
           command: str) -> dict:
  """Writes ROOT/experiment.json; refuses a root that holds another definition."""
  b = exp.budget(budget)
  definition = {"config": exp.config_arg(budget), "kinds": list(exp.kinds_of(budget)),
                "seeds": b.seeds, "overrides": list(b.overrides), "vmap_seeds": exp.vmap_seeds,
                **({"grid": list(b.grid)} if b.grid else {})}
  path = root / "experiment.json"
  if path.exists():
    old = json.loads(path.read_text())
    if old.get("definition") != definition:
      raise UserError(f"{root} holds runs of another definition ({old.get('name')}, budget "
                      f"{old.get('budget')}); use another --root")
  meta = {"name": exp.name, "title": exp.title, "budget": budget, "budget_note": b.note,
          "metric": exp.metric, "target": exp.target, "anchor": exp.anchor,
          "definition": definition,
          "command": command, "sweep": "python -m metricattn.sweep " + shlex.join(sweep)}
  root.mkdir(parents=True, exist_ok=True)
  write_atomic(path, json.dumps(meta, indent=2) + "\n")
  return meta


def first_errors(root: Path, limit: int = 3) -> list[str]:
  """The `error:` lines of failed runs' logs under root."""
  found = []
  for log in sorted(root.rglob("log.txt")):
    found += [f"{log}: {l}" for l in log.read_text().splitlines() if l.startswith("error:")]
  return found[:limit]


def outputs(exp: registry.Experiment) -> tuple[str, ...]:
  """The files of ROOT that `--results` copies: OUTPUTS and the experiment's figure."""
  return OUTPUTS + ((exp.figure.file,) if exp.figure else ())


def copy_results(root: Path, results: Path, exp: registry.Experiment) -> None:
  results.mkdir(parents=True, exist_ok=True)
  for name in outputs(exp):
    if (root / name).exists():
      shutil.copy2(root / name, results / name)


def draw_figure(figure: registry.Figure, root: Path) -> tuple[str, str, str]:
  """Draws ROOT/figure.file; returns (file, alt text, caption) for the report."""
  module, _, function = figure.draw.partition(":")
  getattr(importlib.import_module(module), function)(root, root / figure.file)
  print(f"wrote {root / figure.file}")
  return figure.file, figure.alt, figure.caption


def evaluate_robustness(exp: registry.Experiment, budget: str, root: Path) -> None:
  """The robustness evaluation of every run under root (`robustness_eval.run`), printed."""
  from metricattn import robustness_eval
  from metricattn.attacks import Settings
  enable_compilation_cache()
  try:
    print(robustness_eval.run(root, Settings(**exp.robustness_of(budget))))
  except UserError as e:
    raise UserError(f"the robustness evaluation of {root} failed: {e}") from None


def write_baselines(name: str, budget: str, root: Path) -> None:
  """ROOT/baselines.json: the trivial baselines on the runs' data (`metricattn.baselines`),
  once; the report prints them."""
  from metricattn import baselines
  path = root / "baselines.json"
  if not path.exists():
    print(f"experiment {name}, budget {budget}: trivial baselines", flush=True)
    write_atomic(path, json.dumps(baselines.compute(name, budget), indent=2) + "\n")


def run(name: str, budget: str, root: Path | None, jobs: int | None,
        results: Path | None, command: str, robust: bool = True,
        with_baselines: bool = True) -> int:
  from metricattn.comparison import write_report
  t0 = time.perf_counter()
  exp = registry.get(name)
  exp.budget(budget)
  root = root or Path("runs/experiments") / name / budget
  preflight(load_config(exp, budget, exp.kinds_of(budget)[0]))
  runs_lib.make_workdir(root, "--root")
  if results:
    runs_lib.make_workdir(results, "--results")
  grid = grid_of(exp, budget, root, jobs)
  meta = record(root, exp, budget, sweep_args(grid), command)
  print(f"experiment {name}, budget {budget}: {meta['sweep']}", flush=True)
  code = run_grid(**{**grid, "seeds": parse_seeds(grid["seeds"])})
  if code > 128:  # stopped by a signal, its runs after a checkpoint: run_grid said so
    return code
  if code != 0:
    for line in first_errors(root):
      print(line, file=sys.stderr)
    raise UserError(f"some runs of {name} failed (logs under {root}); fix the cause and rerun "
                    "the same command to finish")
  if exp.robustness and robust:
    evaluate_robustness(exp, budget, root)
  if with_baselines:
    write_baselines(name, budget, root)
  more = [draw_figure(exp.figure, root)] if exp.figure else []
  write_report(root, experiment=meta, more_figures=more)
  print(f"wrote {root / 'report.md'}")
  print(f"experiment {name}, budget {budget}: done in {time.perf_counter() - t0:.0f} s")
  if results:
    copy_results(root, results, exp)
    print(f"copied the report and figures to {results}")
  return 0


def list_experiments() -> str:
  lines = []
  for e in registry.EXPERIMENTS.values():
    exists = "" if (REPO / e.config).exists() else f"  [missing {e.config}]"
    lines.append(f"{e.name:24s} {e.title}{exists}")
    for b, budget in e.budgets.items():
      lines.append(f"  {b:6s} {budget.note}")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m metricattn.experiment", description=__doc__.split("\n")[0])
  p.add_argument("name", nargs="?", help=f"one of {', '.join(registry.EXPERIMENTS)}")
  budgets = dict.fromkeys(b for e in registry.EXPERIMENTS.values() for b in e.budgets)
  p.add_argument("--budget", default="quick",
                 help=f"one of the experiment's budgets ({', '.join(budgets)}; `--list` shows "
                 "which each experiment has)")
  p.add_argument("--root", type=Path, default=None,
                 help="where the runs go (default runs/experiments/NAME/BUDGET)")
  p.add_argument("--jobs", type=int, default=None, help="processes in parallel")
  p.add_argument("--results", type=Path, default=None, help="copy report and figures here")
  p.add_argument("--no-robustness", action="store_true",
                 help="skip the robustness evaluation of image classifiers")
  p.add_argument("--no-baselines", action="store_true",
                 help="skip the trivial baselines (metricattn.baselines) in the report")
  p.add_argument("--list", action="store_true", help="list the experiments and budgets")
  a = p.parse_args(argv)
  if a.list or not a.name:
    print(list_experiments())
    return 0
  command = "python -m metricattn.experiment " + shlex.join(sys.argv[1:] if argv is None
                                                           else argv)
  try:
    return run(a.name, a.budget, a.root, a.jobs, a.results, command, not a.no_robustness,
               not a.no_baselines)
  except UserError as e:
    return error(str(e))


if __name__ == "__main__":
  sys.exit(main())
