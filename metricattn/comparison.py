"""The comparison of the groups of runs under a root: loading the runs, statistics per group and
against the softmax group, tables, figures, and ROOT/report.md and report.json
(`write_report`). The command `python -m metricattn.report` (its docstring says what the
report holds) and `metricattn.experiment` call it."""


from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

from metricattn import baselines, plots, stats
from metricattn.errors import UserError
from metricattn.fileio import full_disk_is_one_line, read_json, read_jsonl, write_atomic
from metricattn import runs as runs_lib
from metricattn.runs import SELECTION_SPLIT, best_val_step, experiment_title, load_experiment
from metricattn.reporting import fmt, machine_description, markdown_table, mean_std
from metricattn.study.section import study_section
from metricattn.study.storage import STUDY_FILE

# The headline metric of a run, by preference.
METRICS = ("test/accuracy", "test/bleu", "val/accuracy", "val/bleu")
BASELINE = "softmax"
# The summary.json values the report computes with: a run where one is not a number (None
# stands for "not measured") is skipped with a warning.
NUMBERS = (*METRICS, "test/loss", "val/loss", "train/loss", "steps_per_second", "num_params",
           "step", "compile_seconds", "wall_seconds")


def is_number(v) -> bool:
  return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


# ---------------------------------------------------------------- loading

def load_runs(root: Path) -> list[dict]:
  """One dict per finished run: summary plus `group`, `seed`, `workdir`, `records`."""
  runs = []
  for workdir in runs_lib.finished_runs(root):
    summary, config = read_json(workdir / "summary.json"), read_json(workdir / "config.json")
    if summary is None or config is None:
      print(f"warning: skipping {workdir}: its summary.json or config.json is unreadable",
            file=sys.stderr)
      continue
    bad = [k for k, v in summary.items() if k in NUMBERS and not is_number(v)]
    if bad or not isinstance(config.get("seed"), int):
      what = f"summary.json's {bad[0]} is {summary[bad[0]]!r}" if bad else "no seed"
      print(f"warning: skipping {workdir}: {what}, not a number", file=sys.stderr)
      continue
    runs.append({**summary, "group": runs_lib.group_name(root, workdir), "seed": config["seed"],
                 "workdir": str(workdir), "records": read_jsonl(workdir / "metrics.jsonl"),
                 "corpus": config.get("data", {}).get("corpus")})
  return runs


def headline_metric(runs: list[dict]) -> str:
  for m in METRICS:
    if all(m in r for r in runs):
      return m
  raise UserError(f"the runs share none of the metrics {', '.join(METRICS)}")


def series(records: list[dict], split: str, key: str) -> plots.Curve:
  """(steps, values) of `key` in the records of `split`, in step order."""
  rows = sorted((r["step"], r[key]) for r in records if r["split"] == split and key in r)
  return [s for s, _ in rows], [v for _, v in rows]


def group_order(group: str) -> tuple:
  """Sorts 'optimizer.lr=3e-4/...' groups by value: numbers as numbers (3e-4 < 1e-3),
  other values as text."""
  def part(p: str):
    key, _, value = p.partition("=")
    try:
      return (key, 0, float(value), "")
    except ValueError:
      return (key, 1, 0.0, value)
  return tuple(part(p) for p in group.split("/"))


def group_runs(runs: list[dict]) -> dict[str, list[dict]]:
  groups: dict[str, list[dict]] = {}
  for r in sorted(runs, key=lambda r: (group_order(r["group"]), r["seed"])):
    groups.setdefault(r["group"], []).append(r)
  return groups


# ---------------------------------------------------------------- statistics

def run_stats(run: dict, metric: str, target: float | None) -> dict:
  """Per-run measures: final metric and the metric at the best val evaluation (None without
  a val split), steps/seconds to target, loss AUC and jitter."""
  split, key = metric.split("/")
  eval_steps, eval_values = series(run["records"], split, key)
  loss_steps, losses = series(run["records"], "train", "loss")
  reached = None if target is None else stats.first_reaching(eval_steps, eval_values, target)
  sps = run.get("steps_per_second")
  best_step = best_val_step(run["records"])
  return {"final": run[metric], "best": dict(zip(eval_steps, eval_values)).get(best_step),
          "late_gain": stats.late_gain(eval_steps, eval_values),
          "steps_to_target": reached,
          "seconds_to_target": reached / sps if reached is not None and sps else None,
          "loss_auc": stats.curve_auc(loss_steps, losses), "loss_jitter": stats.jitter(losses),
          "final_loss": run.get("train/loss"), "steps_per_second": sps}


def _mean(values) -> float | None:
  v = [x for x in values if x is not None]
  return sum(v) / len(v) if v else None


def _median(values) -> float | None:
  v = [x for x in values if x is not None]
  return stats.summarize(v)["median"] if v else None


def val_metric(metric: str) -> str:
  """The headline metric's key on the split settings are chosen on: test/accuracy ->
  val/accuracy."""
  return f"{SELECTION_SPLIT}/{metric.split('/')[1]}"


def group_stats(rs: list[dict], metric: str, target: float | None) -> dict:
  """Aggregates over the seeds of one group."""
  per = [run_stats(r, metric, target) for r in rs]
  col = lambda k: [p[k] for p in per]
  return {"attention": rs[0].get("attention", "?"), "seeds": [r["seed"] for r in rs],
          "final": stats.summarize(col("final")), "final_values": col("final"),
          "val_final": _mean([r.get(val_metric(metric)) for r in rs]),
          "best_mean": _mean(col("best")), "late_gain": _mean(col("late_gain")),
          "steps_to_target": _median(col("steps_to_target")),
          "seconds_to_target": _median(col("seconds_to_target")),
          "has_target": target is not None,
          "reached": sum(s is not None for s in col("steps_to_target")),
          "loss_auc": _mean(col("loss_auc")), "loss_jitter": _mean(col("loss_jitter")),
          "final_loss": _mean(col("final_loss")),
          "steps_per_second": _mean(col("steps_per_second")),
          "num_params": rs[0].get("num_params"), "per_run": per}


def baseline_of(name: str, groups: dict[str, dict]) -> str | None:
  """The softmax group of the same grid point as `name` (None for softmax groups)."""
  if groups[name]["attention"] == BASELINE:
    return None
  parts = name.split("/")
  swapped = "/".join(f"attention={BASELINE}" if p.startswith("attention=") else p
                     for p in parts)
  if swapped != name and swapped in groups:
    return swapped
  softmax = [n for n, g in groups.items() if g["attention"] == BASELINE]
  return softmax[0] if len(softmax) == 1 else None


def comparisons(groups: dict[str, dict], pairs: list[tuple[str, str | None]] | None = None
                ) -> tuple[list[dict], list[str]]:
  """(comparisons of each (group, baseline) pair, by default every group with its
  `baseline_of`; "group vs baseline" pairs left out for < 2 seeds)."""
  out, left_out = [], []
  pairs = [(name, baseline_of(name, groups)) for name in groups] if pairs is None else pairs
  for name, base in pairs:
    if base is None:
      continue
    g = groups[name]
    if min(g["final"]["n"], groups[base]["final"]["n"]) < 2:
      left_out.append(f"{name} vs {base}")
      continue
    out.append({"group": name, "baseline": base,
                **stats.compare(g["final_values"], groups[base]["final_values"],
                                seeds_a=g["seeds"], seeds_b=groups[base]["seeds"])})
  return out, left_out


def chosen_per_kind(groups: dict[str, dict]) -> dict[str, str]:
  """Per attention kind run at several grid points (a grid over another setting, such as
  the learning rate): the group with the highest mean final `val` score of the headline
  metric, the first in group order on a tie; test is not looked at. {} when no kind has
  several groups or a group has no val score."""
  by_kind: dict[str, list[str]] = {}
  for name, g in groups.items():
    by_kind.setdefault(g["attention"], []).append(name)
  if all(len(names) == 1 for names in by_kind.values()) or any(
      g["val_final"] is None for g in groups.values()):
    return {}
  return {kind: max(names, key=lambda n: groups[n]["val_final"])
          for kind, names in by_kind.items()}


def chosen_comparisons(groups: dict[str, dict], chosen: dict[str, str]
                       ) -> tuple[list[dict], list[str]]:
  """`comparisons` of each kind's chosen group with the chosen softmax group."""
  base = chosen.get(BASELINE)
  return comparisons(groups, [(name, base) for kind, name in chosen.items()
                              if kind != BASELINE])


# ---------------------------------------------------------------- rendering

def metric_digits(metric: str) -> int:
  """Decimals for a metric: BLEU (0..100) with 2, accuracies with 4."""
  return 2 if "bleu" in metric else 4


def fmt_p(p: float | None) -> str:
  return "n/a" if p is None else (f"{p:.2e}" if p < 1e-3 else f"{p:.3f}")


def header_lines(root: Path, runs: list[dict], metric: str, target: float | None,
                 experiment: dict | None) -> list[str]:
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  lines = [f"# Report: {experiment['title'] if experiment else root}", ""]
  if experiment:
    lines += [f"- Experiment: `{experiment['name']}`, budget **`{experiment['budget']}`** "
              f"({experiment.get('budget_note', '')})",
              f"- Command: `{experiment['command']}`",
              f"- Runs: `{experiment.get('sweep', '')}`"]
    if experiment.get("anchor"):
      lines.append(f"- Anchor (published, not ours): {experiment['anchor']}.")
  writer = "by the command above" if experiment else f"by `python -m metricattn.report {root}`"
  last = max((Path(r["workdir"]) / "summary.json").stat().st_mtime for r in runs)
  finished = datetime.datetime.fromtimestamp(last, datetime.timezone.utc)
  lines += [f"- Machine: {machine_description()}",
            f"- Runs finished: {finished:%Y-%m-%d %H:%M} UTC (the newest summary.json); "
            f"report written: {now}, {writer}",
            f"- {len(runs)} finished run{'s' if len(runs) != 1 else ''}; headline metric `{metric}` (final evaluation; "
            f"higher is better); target {fmt(target) if target is not None else 'none'}."]
  return lines + corpus_lines(runs) + [""]


def corpus_lines(runs: list[dict]) -> list[str]:
  """The fingerprint of the runs' corpus (data.corpus, as debian_l10n records it)."""
  corpora = {json.dumps(r["corpus"], sort_keys=True): r["corpus"] for r in runs if r["corpus"]}
  lines = [f"- Corpus: {c['pairs']:,} pairs ({c['lang']}), sha256 {c['sha256']}, "
           f"{c['catalogues']} catalogues (unreadable: {c['unreadable'] or 'none'}); "
           f"packages: {c['packages']}" for c in corpora.values()]
  if len(lines) > 1:
    lines.insert(0, f"- **Warning: these runs used {len(lines)} different corpora; results "
                 "on different corpora are not comparable.**")
  return lines


def has_val(groups: dict[str, dict]) -> bool:
  """Whether any run has a val evaluation to choose its best evaluation on."""
  return any(p["best"] is not None for g in groups.values() for p in g["per_run"])


BEST = f"at best {SELECTION_SPLIT} eval"


def target_cell(g: dict) -> str:
  n = g["final"]["n"]
  if not g["has_target"]:
    return "n/a"
  if not g["reached"]:
    return f"not reached (0/{n})"
  return f"{g['steps_to_target']:.0f} ({g['reached']}/{n})"


def summary_table(groups: dict[str, dict], metric: str) -> list[str]:
  d, val = metric_digits(metric), has_val(groups)
  head = ["group", "attention", "seeds", f"{metric} mean ± std", "median", "min", "max",
          *([f"{metric} {BEST} (mean)"] if val else []), "gain in last 20% of steps (mean)",
          "steps to target (median, reached)",
          "seconds to target", "train-loss AUC/step", "train-loss jitter", "final train loss",
          "steps/s", "params"]
  rows = []
  for name, g in groups.items():
    f = g["final"]
    rows.append([name, g["attention"], f["n"], mean_std(f, d), fmt(f["median"], d),
                 fmt(f["min"], d), fmt(f["max"], d), *([fmt(g["best_mean"], d)] if val else []),
                 fmt(g["late_gain"], d), target_cell(g), fmt(g["seconds_to_target"], 1), fmt(g["loss_auc"]),
                 fmt(g["loss_jitter"]), fmt(g["final_loss"]), fmt(g["steps_per_second"], 1),
                 g["num_params"]])
  return markdown_table(head, rows)


def comparison_table(comps: list[dict], left_out: list[str], metric: str) -> list[str]:
  d = metric_digits(metric)
  note = ([f"Not compared: {', '.join(left_out)}; comparisons need >= 2 seeds per group.",
           ""] if left_out else [])
  if not comps:
    return note or ["No comparison: the runs have no `softmax` group to compare with (in a "
                    "study each trial is its own group: see the study section's tables by "
                    "searched choice).", ""]
  small = any(c["ci_low"] is None for c in comps)
  lines = [f"Difference of the mean final `{metric}` of each group minus its `softmax` "
           "baseline; 95% percentile bootstrap interval (10,000 resamples of each group, "
           f"seed 0{'; n/a when a group has fewer than ' if small else ''}"
           f"{f'{stats.MIN_BOOTSTRAP} seeds, too few for a bootstrap to say anything' if small else ''}); "
           "two-sided p-values of Welch's t-test and the Mann-Whitney U test, of the paired "
           "t-test and Wilcoxon's signed-rank test on the seeds both groups ran (the same seed "
           "gives both kinds the same data order and initial values of the shared "
           "parameters), and of the Brown-Forsythe test of equal spread over seeds.", "",
           "| comparison | difference of means | 95% bootstrap interval | Welch t p | "
           "Mann-Whitney U p | pairs | paired t p | Wilcoxon p | Brown-Forsythe p (spread) |",
           "|---|---|---|---|---|---|---|---|---|"]
  for c in comps:
    ci = ("n/a" if c["ci_low"] is None
          else f"[{c['ci_low']:+.{d}f}, {c['ci_high']:+.{d}f}]")
    lines.append(f"| {c['group']} vs {c['baseline']} | {c['diff']:+.{d}f} | {ci} | "
                 f"{fmt_p(c['welch_p'])} | {fmt_p(c['mannwhitney_p'])} | "
                 f"{c.get('pairs', 'n/a')} | {fmt_p(c.get('paired_t_p'))} | "
                 f"{fmt_p(c.get('wilcoxon_p'))} | {fmt_p(c.get('brown_forsythe_p'))} |")
  return lines + [""] + note


def chosen_lines(groups: dict[str, dict], chosen: dict[str, str],
                 chosen_comps: tuple[list[dict], list[str]], metric: str) -> list[str]:
  """The section of the groups chosen per kind on val (`chosen_per_kind`), and their
  comparison with the chosen softmax group (`chosen_comparisons`); [] without a choice."""
  if not chosen:
    return []
  d, val_key = metric_digits(metric), val_metric(metric)
  rows = []
  for kind, name in chosen.items():
    names = [n for n, g in groups.items() if g["attention"] == kind]
    g = groups[name]
    rows.append([kind, name + (" (edge of the grid)" if name in (names[0], names[-1]) else ""),
                 f"{fmt(g['val_final'], d)} (of {', '.join(fmt(groups[n]['val_final'], d) for n in names)})",
                 mean_std(g["final"], d), fmt(g["late_gain"], d)])
  return ["## Chosen per kind on val", "",
          f"Each kind's setting chosen on `{SELECTION_SPLIT}`: the group with the highest mean "
          f"final `{val_key}` over its seeds (test is not looked at); the kinds compared at "
          "their chosen settings. A choice at the edge of the grid means the grid may not "
          "hold the kind's best value.", "",
          *markdown_table(["kind", "chosen group", f"final {val_key} (mean; every group of "
                           "the kind in order)", f"{metric} mean ± std",
                           "gain in last 20% of steps (mean)"], rows), "",
          *comparison_table(*chosen_comps, metric)]


def per_seed_table(groups: dict[str, dict], runs_by_group: dict[str, list[dict]],
                   metric: str) -> list[str]:
  d, val = metric_digits(metric), has_val(groups)
  head = ["group", "seed", metric, *([BEST] if val else []), "final train loss", "steps/s"]
  rows = [[name, r["seed"], fmt(p["final"], d), *([fmt(p["best"], d)] if val else []),
           fmt(p["final_loss"]), fmt(p["steps_per_second"], 1)]
          for name, rs in runs_by_group.items() for r, p in zip(rs, groups[name]["per_run"])]
  return markdown_table(head, rows)


def robustness_lines(root: Path) -> list[str]:
  """The table of ROOT/robustness.md (written by metricattn.robustness), if there is one."""
  path = root / "robustness.md"
  if not path.exists():
    return []
  body = [l for l in path.read_text().splitlines() if not l.startswith("# ")]
  while body and not body[0].strip():
    body.pop(0)
  return ["## Robustness (beyond the paper)", "", *body, ""]


def write_figures(root: Path, runs_by_group: dict[str, list[dict]], metric: str,
                  title: str) -> list[tuple[str, str, str]]:
  """Writes curves.png and violin.png into root; returns (file, alt text, caption)."""
  split, key = metric.split("/")
  panels = [("loss", "train", "loss"), ("metric", split, key)]
  if any("perplexity" in rec for rs in runs_by_group.values() for r in rs
         for rec in r["records"] if rec.get("split") == split):
    panels.insert(1, ("perplexity", split, "perplexity"))
  curves = {name: {panel: [series(r["records"], s, k) for r in rs] for panel, s, k in panels}
            for name, rs in runs_by_group.items()}
  plots.plot_curves(curves, [(p, "training loss" if p == "loss" else f"{s}/{k}")
                             for p, s, k in panels], root / "curves.png", title)
  plots.plot_violin({n: [r[metric] for r in rs] for n, rs in runs_by_group.items()},
                    f"final {metric}", root / "violin.png", title)
  single = (" Groups of one seed (n = 1, no spread) have a line and no band."
            if any(len(rs) < 2 for rs in runs_by_group.values()) else "")
  shown = "Training loss, perplexity and" if len(panels) == 3 else "Training loss and"
  return [("curves.png", "training curves", f"{shown} the headline metric over "
           "steps: mean over seeds, band min..max over seeds; markers on curves of "
           f"<= {plots.MARKERS_UP_TO} points." + single),
          ("violin.png", "final metric", f"Final {metric} per group; dots are seeds.")]


def render(root: Path, runs: list[dict], *, target: float | None = None,
           experiment: dict | None = None, figures: bool = True,
           more_figures: list[tuple[str, str, str]] = (),
           more_lines: list[str] = ()) -> tuple[str, dict]:
  """(report.md text, report.json content); writes the figures when `figures`;
  `more_figures` (file in root, alt text, caption) are listed after them, `more_lines`
  (markdown) after the comparison."""
  metric = headline_metric(runs)
  runs_by_group = group_runs(runs)
  groups = {n: group_stats(rs, metric, target) for n, rs in runs_by_group.items()}
  comps, left_out = comparisons(groups)
  chosen = chosen_per_kind(groups)
  chosen_comps = chosen_comparisons(groups, chosen) if chosen else ([], [])
  lines = header_lines(root, runs, metric, target, experiment)
  best = (f"`{metric}` {BEST}: at the evaluation with the best `{SELECTION_SPLIT}` "
          "score (accuracy, else BLEU, else lowest loss), as `evaluate --step best` chooses. "
          if has_val(groups) else "No best-evaluation column: the runs have no "
          f"`{SELECTION_SPLIT}` split to choose an evaluation on (choosing on test would "
          "leak it). ")
  lines += ["## Summary per group", "", *summary_table(groups, metric), "",
            "Std: sample standard deviation over seeds. " + best + "Gain in the last 20% of "
            "steps: the final evaluation minus the last one at or before 80% of the run (mean "
            "over seeds; near zero when the runs have levelled off). Steps to target: the first "
            "evaluation at or above the target (median over the seeds that reached it). "
            "Seconds: those steps at the run's training speed (compilation and evaluation "
            "excluded). AUC/step: area under the logged training loss divided by the step "
            "span (the average training loss). Jitter: mean absolute change between "
            "consecutive logged training losses (each a mean over `train.log_every` steps; "
            "it includes the descent itself, so compare it between groups of equal loss "
            "curves' shape with care).",
            "", "## Comparison with softmax", "", *comparison_table(comps, left_out, metric),
            *chosen_lines(groups, chosen, chosen_comps, metric), *more_lines]
  if figures:
    title = f"{experiment_title(root, experiment)}: {metric}"
    lines += ["## Figures", ""]
    for file, alt, caption in [*write_figures(root, runs_by_group, metric, title),
                               *more_figures]:
      lines += [f"![{alt}]({file})", "", caption, ""]
  lines += robustness_lines(root)
  lines += ["## Per seed", "", *per_seed_table(groups, runs_by_group, metric)]
  platforms = sorted({f"{r.get('platform', '?')} x{r.get('devices', '?')}" for r in runs})
  in_program = sorted({r.get("seeds_in_program", 1) for r in runs})
  lines += ["", f"Devices: {', '.join(platforms)}; seeds per compiled program: "
            f"{', '.join(map(str, in_program))}. Steps/s excludes compilation and evaluation "
            "pauses; with several seeds in one program it is the program's speed (all its "
            "seeds advance one step)."]
  data = {"metric": metric, "target": target, "experiment": experiment,
          "groups": {n: {k: v for k, v in g.items()} for n, g in groups.items()},
          "comparisons": comps, "not_compared": left_out,
          **({"chosen": chosen, "chosen_comparisons": chosen_comps[0]} if chosen else {})}
  return "\n".join(lines) + "\n", data


def write_report(root: Path, *, target: float | None = None, experiment: dict | None = None,
                 more_figures: list[tuple[str, str, str]] = ()) -> str:
  """Writes ROOT/report.md, report.json and the figures; returns the markdown.
  `more_figures`: (file in root, alt text, caption) of figures drawn elsewhere."""
  runs = load_runs(root)
  if not runs:
    raise FileNotFoundError(f"no finished runs (summary.json) under {root}")
  experiment = experiment or load_experiment(root)
  if target is None and experiment:
    target = experiment.get("target")
  more_lines = ([*baselines.markdown_lines(read_json(root / "baselines.json")), ""]
                if (root / "baselines.json").exists() else [])  # written by experiment
  if (root / STUDY_FILE).exists():  # an Optuna study's root
    study_lines, study_figures = study_section(root)
    more_lines = [*more_lines, *study_lines]
    more_figures = [*more_figures, *study_figures]
  with full_disk_is_one_line(root / "report.md", "the runs and the report files written "
                             "before are intact"):  # each file is written atomically
    text, data = render(root, runs, target=target, experiment=experiment,
                        more_figures=more_figures, more_lines=more_lines)
    write_atomic(root / "report.md", text)
    write_atomic(root / "report.json", json.dumps(data, indent=2) + "\n")
  return text
