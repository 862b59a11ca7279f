"""Evaluating trained classifiers under input noise and L-infinity attacks, run by run and for a
root of runs (ROOT/robustness.{json,md,png}); the command `python -m metricattn.robustness`
(its docstring says what is measured) and `metricattn.experiment` call `run`."""


from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

from metricattn import runs as runs_lib
from metricattn.attention.layer import attention_name
from metricattn.attacks import ATTACKS, Settings, evaluate_attacks
from metricattn.errors import UserError
from metricattn.fileio import read_json, write_atomic
from metricattn.restore import restore
from metricattn.reporting import markdown_table, mean_std
from metricattn.stats import summarize


# ---------------------------------------------------------------- checkpoints

def restore_run(workdir: Path):
  """(config, data, graphdef, params, step) of a run's latest checkpoint."""
  config = runs_lib.run_config(workdir)
  if config.get("task", "classification") != "classification":
    raise UserError(f"{workdir} is a {config.task} run; robustness needs a classifier")
  config, data, _, graphdef, params, step = restore(workdir)
  return config, data, graphdef, params, step


def check_clean(workdir: Path, result: dict) -> None:
  """Warns when the clean accuracy differs from the run's own final evaluation."""
  path = workdir / "summary.json"
  if not path.exists():
    return
  summary = json.loads(path.read_text())
  logged = summary.get(f"{result['split']}/accuracy")
  if logged is None or summary.get("step") != result["step"] or result["subset"]:
    return
  result["summary_accuracy"] = logged
  if abs(logged - result["clean_accuracy"]) > 0.5 / result["examples"] + 1e-6:
    print(f"warning: {workdir}: clean accuracy {result['clean_accuracy']:.4f} differs from "
          f"the run's logged {logged:.4f}", file=sys.stderr)


def evaluate_run(workdir: Path, settings: Settings, force: bool = False) -> dict:
  """Writes and returns WORKDIR/robustness.json (reused when its settings match)."""
  out = workdir / "robustness.json"
  wanted = dataclasses.asdict(settings)
  if out.exists() and not force:
    old = json.loads(out.read_text())
    refuse_other_settings(out, old.get("settings"), settings)
    summary = workdir / "summary.json"
    step = json.loads(summary.read_text()).get("step") if summary.exists() else None
    if old.get("step") == step:
      return {**old, "workdir": str(workdir)}  # same settings and checkpoint; the root
      # may have moved since (its runs are grouped by where they are now)
  config, data, graphdef, params, step = restore_run(workdir)
  result = {"workdir": str(workdir), "step": step, "seed": int(config.seed),
            "attention": attention_name(config.model), "settings": wanted,
            **evaluate_attacks(params, graphdef, data, config, settings)}
  check_clean(workdir, result)
  write_atomic(out, json.dumps(result, indent=2) + "\n")
  return result


# ---------------------------------------------------------------- many runs

def find_runs(root: Path) -> list[Path]:
  """Finished classification runs below root (directories with config.json + summary.json)."""
  return [w for w in runs_lib.finished_runs(root)
          if (read_json(w / "config.json") or {}).get("task", "classification")
          == "classification"]


def aggregate(root: Path, results: list[dict]) -> dict:
  """group -> attack -> [(strength, accuracies over seeds)]."""
  groups: dict[str, list[dict]] = {}
  for r in results:
    groups.setdefault(runs_lib.group_name(root, Path(r["workdir"])), []).append(r)
  return {name: {a: [(rs[0][a][j][0], [r[a][j][1] for r in rs])
                     for j in range(len(rs[0][a]))] for a in ATTACKS}
          for name, rs in sorted(groups.items())}


def table(agg: dict, attack: str, label: str) -> list[str]:
  """Markdown table: a row per strength, a column per group, mean ± std over seeds."""
  names = list(agg)
  rows = [[f"{s:g}", *(mean_std(summarize(agg[n][attack][j][1])) for n in names)]
          for j, (s, _) in enumerate(agg[names[0]][attack])]
  return markdown_table([label, *names], rows)


def command_flags(settings: Settings) -> list[str]:
  """The `python -m metricattn.robustness` flags that give `settings`."""
  default = Settings()
  join = lambda values: ",".join(f"{v:g}" for v in values)
  flags = [] if settings.split == default.split else [f"--split={settings.split}"]
  flags += [f"--sigmas={join(settings.sigmas)}", f"--eps={join(settings.epsilons)}",
            f"--pgd-steps={settings.pgd_steps}"]
  return flags + ([f"--max-examples={settings.max_examples}"] if settings.max_examples else [])


def refuse_other_settings(path: Path, recorded: dict | None, settings: Settings) -> None:
  """A UserError when `path` holds results made with other settings than `settings`: a
  rerun with another grid never overwrites them silently."""
  if recorded is None or recorded == json.loads(json.dumps(dataclasses.asdict(settings))):
    return
  try:
    made = " ".join(command_flags(Settings(**{**recorded, "sigmas": tuple(recorded["sigmas"]),
                                              "epsilons": tuple(recorded["epsilons"])})))
  except (TypeError, KeyError):
    made = "other settings"
  raise UserError(f"{path} was made with {made}, not {' '.join(command_flags(settings))}; "
                  "rerun with its flags, or pass --force to replace it")


def labels(settings: Settings) -> list[tuple[str, str]]:
  return [("noise", "sigma"), ("fgsm", "FGSM eps"), ("pgd", f"PGD-{settings.pgd_steps} eps")]


def write_root_report(root: Path, results: list[dict], settings: Settings) -> str:
  """ROOT/robustness.json, robustness.md (tables) and robustness.png; returns the markdown."""
  from metricattn import plots
  agg = aggregate(root, results)
  units = results[0]["units"]
  panels = [("noise", f"Gaussian noise sigma ({units.split(' (')[0]})"),
            ("fgsm", "FGSM eps (L-inf)"), ("pgd", f"PGD-{settings.pgd_steps} eps (L-inf)")]
  plots.plot_strengths(agg, panels, root / "robustness.png",
                       f"{runs_lib.experiment_title(root)}: accuracy under noise and attacks")
  n = results[0]["examples"]
  lines = ["# Robustness", "",
           f"Accuracy on the first {n} examples of the `{settings.split}` split under "
           f"Gaussian input noise and FGSM / PGD-{settings.pgd_steps} L-infinity attacks "
           f"(`python -m metricattn.robustness --workdir={root} "
           f"{' '.join(command_flags(settings))}`); strengths in {units}. "
           "Mean ± std over seeds; only evaluated points are perturbed.", ""]
  for attack, label in labels(settings):
    lines += table(agg, attack, label) + [""]
  lines += ["![accuracy against noise and attack strength](robustness.png)", ""]
  text = "\n".join(lines)
  write_atomic(root / "robustness.md", text)
  write_atomic(root / "robustness.json", json.dumps(
      {"settings": dataclasses.asdict(settings), "units": units, "groups": agg}, indent=2) + "\n")
  return text


def check_settings(settings: Settings) -> None:
  """A UserError unless there is a PGD step, a sigma and an eps, none negative, and
  --max-examples is not negative."""
  if settings.pgd_steps < 1 or not settings.sigmas or not settings.epsilons:
    raise UserError("need --pgd-steps >= 1 and at least one sigma and one eps")
  for flag, values in (("--sigmas", settings.sigmas), ("--eps", settings.epsilons)):
    if any(not math.isfinite(v) or v < 0 for v in values):
      raise UserError(f"{flag} must be finite numbers >= 0; got {','.join(map(str, values))}")
  if settings.max_examples < 0:
    raise UserError(f"--max-examples must be >= 0 (0: the whole split); got "
                    f"{settings.max_examples}")


def run(workdir: Path, settings: Settings, force: bool = False) -> str:
  """Evaluates one run (WORKDIR/config.json exists) or every run below a root (and writes
  the root's robustness report); returns what to print: the run's tables, or the root's
  robustness.md."""
  check_settings(settings)
  if (workdir / "config.json").exists():
    r = evaluate_run(workdir, settings, force)
    agg = {r["attention"]: next(iter(aggregate(workdir.parent, [r]).values()))}
    lines = [f"{workdir}: clean accuracy {r['clean_accuracy']:.4f} on {r['examples']} "
             f"`{r['split']}` examples; strengths in {r['units']}", ""]
    for attack, label in labels(settings):
      lines += table(agg, attack, label) + [""]
    return "\n".join(lines) + f"wrote {workdir / 'robustness.json'}"
  if not force:
    refuse_other_settings(workdir / "robustness.json",
                          (read_json(workdir / "robustness.json") or {}).get("settings"),
                          settings)
  runs = find_runs(workdir)
  if not runs:
    raise UserError(f"{workdir} holds no finished classification run (config.json and "
                    "summary.json)")
  results = []
  for i, w in enumerate(runs, 1):
    results.append(evaluate_run(w, settings, force))
    print(f"[{i}/{len(runs)}] {w}: clean {results[-1]['clean_accuracy']:.4f}", flush=True)
  return write_root_report(workdir, results, settings)
