"""The study section of a report (`metricattn.report` on a study's root, ROOT/study.json):
the best trials, Optuna's optimisation history and parameter importances."""

from __future__ import annotations

import warnings
from pathlib import Path

from metricattn import plots
from metricattn.errors import UserError
from metricattn.reporting import fmt, markdown_table, mean_std
from metricattn.stats import summarize
from metricattn.study.space import Param, parse_param, point_value
from metricattn.study.storage import load_definition, open_study


def searched(item: str) -> Param:
  """A recorded search-space item as a Param: `KEY=DISTRIBUTION(ARGS)`, or a grid study's
  `KEY=V1,V2,...` (its values are choices)."""
  try:
    return parse_param(item)
  except UserError:
    key, _, values = item.partition("=")
    return Param(item, key, "choice", tuple(values.split(",")))


def by_choice(d: dict, trials: list) -> list[str]:
  """For each searched choice (e.g. model.attention): the complete trials' objective per
  value. Each trial is its own group of runs, so the report's comparison with a `softmax`
  group cannot pair them; this compares the values across trials, and says that the trials
  also differ in the other searched values."""
  lines = []
  for param in map(searched, d["space"]):
    if param.kind != "choice":
      continue
    rows = []
    for value in param.args:
      vals = [t.value for t in trials if point_value(t.params.get(param.key)) == value]
      s = summarize(vals) if vals else None
      rows.append([value, len(vals), mean_std(s, 4) if s else "-",
                   fmt(s["min"]) if s else "-", fmt(s["max"]) if s else "-"])
    others = [p.partition("=")[0] for p in d["space"] if p.partition("=")[0] != param.key]
    lines += [f"Complete trials by `{param.key}` (the objective `{d['objective']}`: mean ± std "
              "over trials, each trial the mean over its seeds"
              + (f"; the trials also differ in {', '.join(f'`{o}`' for o in others)}, so this "
                 "is no paired comparison" if others else "") + "):", "",
              *markdown_table([param.key, "trials", "mean ± std", "min", "max"], rows), ""]
  return lines


def study_section(root: Path, top: int = 5) -> tuple[list[str], list[tuple[str, str, str]]]:
  """(markdown lines, figures) for `metricattn.report` on a study's root: the best trials,
  optuna_history.png and, with >= 2 complete trials, optuna_importance.png."""
  from optuna.trial import TrialState
  d = load_definition(root)
  url = d["storage"]
  if "://" not in url and not Path(url).exists() and (root / Path(url).name).exists():
    url = str(root / Path(url).name)  # a journal in the root, reported from another directory
  d["storage_url"] = url
  try:
    study = open_study(d, create=False)
  except (UserError, KeyError) as e:  # e.g. a database whose password is not recorded
    return ["## Study", "", f"Study `{d['study']}` not read: {e}", ""], []
  trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
  sign = -1 if d["direction"] == "max" else 1
  best = sorted(trials, key=lambda t: (sign * t.value, t.number))[:top]
  keys = [p.partition("=")[0].strip() for p in d["space"]]
  rows = [[t.number, fmt(t.value), *[point_value(t.params.get(k)) for k in keys],
           t.user_attrs.get("workdir", "")] for t in best]
  lines = ["## Study", "",
           f"Optuna study `{study.study_name}` ({d['storage']}): {d['sampler']} sampler over "
           f"`{' '.join(d['space'])}`, seeds {d['seeds']} per trial, objective "
           f"`{d['objective']}` ({d['direction']}imised; a trial's value is the mean over its "
           f"seeds); {len(trials)} of {len(study.trials)} trials complete.", "",
           f"Best {len(best)} trials:", "",
           *markdown_table(["trial", d["objective"], *keys, "workdir"], rows), "",
           *by_choice(d, trials)]
  figures = []
  plt = plots._pyplot()
  from optuna.visualization import matplotlib as ov
  # optuna's plots set a style: rc_context keeps it from the report's other figures
  with warnings.catch_warnings(), plt.rc_context():
    warnings.simplefilter("ignore")  # optuna's ExperimentalWarning
    if trials:
      ax = ov.plot_optimization_history(study, target_name=d["objective"])
      ax.figure.savefig(root / "optuna_history.png", dpi=120, bbox_inches="tight")
      plt.close(ax.figure)
      figures.append(("optuna_history.png", "optimisation history",
                      f"Optuna's optimisation history: {d['objective']} of each complete trial "
                      "and the best so far."))
    try:
      ax = ov.plot_param_importances(study)
    except (RuntimeError, ValueError) as e:
      lines += [f"No parameter importances: {' '.join(str(e).split())}", ""]
    else:
      ax.figure.savefig(root / "optuna_importance.png", dpi=120, bbox_inches="tight")
      plt.close(ax.figure)
      figures.append(("optuna_importance.png", "parameter importances",
                      "Optuna's parameter importances (fANOVA) for the objective."))
  return lines, figures
