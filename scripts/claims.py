"""Writes docs/claims.md: the paper's claims, task by task, judged from the committed reports.

  python scripts/claims.py [--check]

It also rewrites the README's summary block (between `<!-- claims -->` and
`<!-- /claims -->`): the final-metric verdict per task and comparison.

Reads every results/NAME/report.json written by `python -m metricattn.experiment` (and its
robustness.json, if any), recomputes the statistics from the per-seed values stored there and
gives each claim a verdict by the rule printed at the top of the page. `--check` only says
whether docs/claims.md is out of date (exit 1 if so); a test runs it, so the page cannot go
stale. Nothing on the page is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metricattn import stats  # noqa: E402
from metricattn.comparison import fmt_p, metric_digits  # noqa: E402
from metricattn.reporting import markdown_table  # noqa: E402

PAGE = ROOT / "docs" / "claims.md"
ALPHA = 0.05
# A run has levelled off when its headline metric rose by less than this over the last 20%
# of its steps (mean over seeds): half a point of accuracy, half a BLEU point.
LEVEL = {"accuracy": 0.005, "bleu": 0.5}
MA = "metric"

RULE = f"""\
**Verdict rule.** A claim compares metric-attention (MA) with another kind (SA: softmax
self-attention, L2: l2 self-attention) on one measure of the runs of one task and budget.
- **supported**: the difference favours MA, each kind has at least {stats.MIN_BOOTSTRAP} seeds,
  Welch's t-test gives p < {ALPHA} and, where there is one, the 95% bootstrap interval of the
  difference excludes zero (for steps to the target, a rank measure: the Mann-Whitney p < {ALPHA};
  for spread: Brown-Forsythe p < {ALPHA});
- **contradicted**: the same evidence, favouring the other kind;
- **undecided**: anything else; the reason is given (too few seeds, p too large).
- Accuracy and BLEU claims also need runs that have **levelled off**: the headline metric rose
  by less than {LEVEL['accuracy'] * 100:g} points of accuracy (or {LEVEL['bleu']:g} BLEU) over the last 20% of the
  steps, in both kinds (mean over seeds). When they have not, or the report predates that
  measure, the verdict is kept and marked "at this budget": it then describes training speed
  as much as final accuracy.
- Steps to target: runs that never reached the target rank last. Spread: the sample standard
  deviation of the final metric over seeds. Robustness: per seed, the mean accuracy over the
  attack's strengths above zero (Gaussian noise on the inputs, FGSM, PGD), higher is better.
- Controls (beyond the paper): MA is also compared with `softmax_g` (softmax with MA's MLP g
  on queries and keys: a learned nonlinearity without a distance) and, for the final metric,
  with the experiment's no-propagation budget (depth 0: `pointwise` for `quick`,
  `B_pointwise` for a budget B), where those were run, and with the best trivial baseline of
  `results/NAME/baselines.json` (logistic regression, kNN, a point-wise MLP; copy-the-source
  or retrieval for translation; `python -m metricattn.baselines`), on the same data: a
  deterministic baseline on one split counts as a
  group without spread, one value per seed.
- Where a budget runs each kind over a grid of another setting (the IPN `lr` budgets: the
  learning rate), each kind is judged at the setting chosen for it on val (the report's
  "Chosen per kind on val"), never on test.
- Paired tests (paired t and Wilcoxon signed-rank on the seeds both kinds ran) are shown
  beside the unpaired ones; the verdict uses the unpaired tests.
"""


def per_run(group: dict, key: str) -> list:
  return [p.get(key) for p in group["per_run"]]


def levelled(group: dict, metric: str) -> bool | None:
  """Whether the group's mean gain over its last 20% of steps (the report's `late_gain`) is
  below LEVEL; None for a report made before that measure."""
  gain = group.get("late_gain")
  return None if gain is None else gain < LEVEL["bleu" if "bleu" in metric else "accuracy"]


def verdict(diff: float, better: int, n: int, p: float | None, ci: tuple | None) -> str:
  """`better` is +1 when a larger difference favours MA, -1 when a smaller one does."""
  if n < stats.MIN_BOOTSTRAP:
    return f"undecided ({n} < {stats.MIN_BOOTSTRAP} seeds)"
  if p is None or p >= ALPHA:
    return f"undecided (p = {fmt_p(p)})"
  if ci is not None and ci[0] <= 0 <= ci[1]:
    return "undecided (interval includes 0)"
  return "supported" if diff * better > 0 else "contradicted"


def brief(verdict: str) -> str:
  """'supported at this budget (...)' -> 'supported*'; 'undecided (...)' -> 'undecided'."""
  return verdict.split(" (")[0].replace(" at this budget", "*")


def claim(task: str, key: str, what: str, other: str, a: list, b: list, seeds_a, seeds_b, *,
          better: int, digits: int, level: str = "", kind: str = "mean",
          label: str = "") -> dict:
  """One row: MA's per-seed values `a` against the other kind's `b`; `kind` is "mean" (a
  difference of means), "ranks" (steps to target; None = never reached) or "spread"."""
  n = min(len(a), len(b))
  ci = None
  cells = {"ci": "n/a", "p": "n/a", "mw": "n/a", "paired": "n/a", "wilcoxon": "n/a"}
  if kind == "spread":
    sa, sb = (stats.summarize(v)["std"] or 0.0 for v in (a, b))
    diff, p = sa - sb, stats.brown_forsythe_p(a, b)
    shown = f"std {sa:.{digits}f} vs {sb:.{digits}f} (Brown-Forsythe p {fmt_p(p)})"
  elif kind == "ranks":
    reached = [[v for v in x if v is not None] for x in (a, b)]
    never = 1 + max([0, *reached[0], *reached[1]])   # ranks after every reached step
    a, b = ([never if v is None else v for v in x] for x in (a, b))
    ma, mb = (stats.summarize(v)["median"] for v in (a, b))
    diff, p = ma - mb, stats.mannwhitney_p(a, b)
    cells["mw"] = fmt_p(p)
    med = lambda r: f"{stats.summarize(r)['median']:g}" if r else "-"
    shown = (f"reached {len(reached[0])}/{len(a)} vs {len(reached[1])}/{len(b)}; median "
             f"steps of those {med(reached[0])} vs {med(reached[1])}")
  else:
    c = stats.compare(a, b, seeds_a=seeds_a, seeds_b=seeds_b)
    diff, p = c["diff"], c["welch_p"]
    if c["ci_low"] is not None:
      ci = (c["ci_low"], c["ci_high"])
      cells["ci"] = f"[{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"
    cells.update(p=fmt_p(p), mw=fmt_p(c["mannwhitney_p"]), paired=fmt_p(c["paired_t_p"]),
                 wilcoxon=fmt_p(c["wilcoxon_p"]))
    shown = f"{diff:+.{digits}f}"
  v = verdict(diff, better, n, p, ci)
  if level and v in ("supported", "contradicted"):
    v += f" at this budget ({level})"
  return {"task": task, "key": key, "other": other, "claim": f"{what}: MA vs {label or other}", "n": f"{len(a)} / {len(b)}",
          "shown": shown, **cells, "verdict": v}


def robustness_scores(path: Path, group: str) -> dict[str, list[float]]:
  """Per attack: per seed, the mean accuracy over strengths above zero."""
  if not path.exists():
    return {}
  data = json.loads(path.read_text())["groups"].get(group, {})
  out = {}
  for attack, curve in data.items():
    levels = [accs for strength, accs in curve if strength > 0]
    if levels:
      out[attack] = [sum(col) / len(col) for col in zip(*levels)]
  return out


# What MA is compared with: the paper's other kinds, then the controls (#28): softmax with
# metric-attention's MLP g (a nonlinearity without a distance) and no propagation at all (the
# experiment's `pointwise` budget of `quick`, `B_pointwise` of budget B).
OTHERS = {"softmax": "SA", "l2": "L2", "softmax_g": "softmax_g (control)",
          "pointwise": "no propagation (control)", "baseline": "best trivial baseline"}


def baseline_group(results: Path, exp: dict, metric: str, seeds: list[int]) -> dict | None:
  """The best trivial baseline of results/NAME/baselines.json (`metricattn.baselines`, made
  on the same budget's data) as a group: its per-seed values where it has one per run seed,
  else its one value for every seed (a deterministic method on one split has no spread)."""
  path = results / "baselines.json"
  if not path.exists():
    return None
  data = json.loads(path.read_text())
  if data.get("budget") != exp["budget"]:
    return None
  scored = [b for b in data["baselines"] if metric in b["metrics"]]
  if not scored:
    return None
  best = max(scored, key=lambda b: b["metrics"][metric]["mean"])
  m = best["metrics"][metric]
  if data.get("seeds") and len(m["values"]) == len(data["seeds"]):
    values, own = m["values"], data["seeds"]
  else:
    values, own = [m["mean"]] * len(seeds), seeds
  return {"name": best["name"], "final_values": values, "seeds": own}


def pointwise_group(exp: dict, reports: dict[Path, dict]) -> dict | None:
  """The group of the report of the experiment's no-propagation control of this budget:
  budget `pointwise` for `quick`, `B_pointwise` for another budget B."""
  control = "pointwise" if exp["budget"] == "quick" else f"{exp['budget']}_pointwise"
  for report in reports.values():
    e = report.get("experiment") or {}
    if (e.get("name"), e.get("budget")) == (exp["name"], control):
      [group] = report["groups"].values()
      return group
  return None


def task_rows(results: Path, reports: dict[Path, dict]) -> tuple[dict | None, list[dict]]:
  """The task of results/NAME (`reports`: every results directory's report.json)."""
  report = reports[results]
  exp, groups = report.get("experiment"), report["groups"]
  # a grid over another setting (the learning rate): each kind at its setting chosen on val
  chosen = report.get("chosen") or {}
  group_of = lambda kind: chosen.get(kind, f"attention={kind}")
  kinds = ({kind: groups[name] for kind, name in chosen.items()} if chosen else
           {g["attention"]: g for name, g in groups.items() if name == group_of(g["attention"])})
  if not exp or MA not in kinds:
    return None, []
  metric, d = report["metric"], metric_digits(report["metric"])
  task = f"{exp['name']} ({exp['budget']})"
  ma = kinds[MA]
  info = {"task": task, "results": results.name, "metric": metric,
          "seeds": ", ".join(f"{k} {g['final']['n']}" for k, g in kinds.items()),
          "levelled": {k: levelled(g, metric) for k, g in kinds.items()},
          "note": exp.get("budget_note", "")}
  pointwise = pointwise_group(exp, reports)
  if pointwise:
    kinds["pointwise"] = pointwise
    info["levelled"]["pointwise"] = levelled(pointwise, metric)
  baseline = baseline_group(results, exp, metric, ma["seeds"])
  if baseline:
    kinds["baseline"] = baseline
    info["levelled"]["baseline"] = True    # a method fitted to convergence, not a curve
  rows = []
  for other in OTHERS:
    if other not in kinds:
      continue
    o = kinds[other]
    lv = [info["levelled"][MA], info["levelled"][other]]
    level = ("" if all(lv) else "not levelled off" if None not in lv
             else "levelling not measured")
    common = dict(seeds_a=ma["seeds"], seeds_b=o["seeds"], digits=d)
    label = f"the best trivial baseline, {o['name']}" if other == "baseline" else other
    rows.append(claim(task, "accuracy", f"final {metric} higher", other, ma["final_values"],
                      o["final_values"], better=+1, level=level, label=label, **common))
    if other in ("pointwise", "baseline"):  # only the final metric
      continue
    if report.get("target") is not None:
      rows.append(claim(task, "steps to target",
                        f"fewer steps to {metric} {report['target']:g}", other,
                        per_run(ma, "steps_to_target"), per_run(o, "steps_to_target"),
                        better=-1, kind="ranks", **common))
    if None not in per_run(ma, "loss_auc") + per_run(o, "loss_auc"):
      rows.append(claim(task, "loss AUC", "lower training-loss AUC/step", other,
                        per_run(ma, "loss_auc"), per_run(o, "loss_auc"), better=-1,
                        **{**common, "digits": 4}))
    rows.append(claim(task, "spread", "smaller spread of the final metric", other,
                      ma["final_values"], o["final_values"], better=-1, kind="spread",
                      **common))
    rob_ma = robustness_scores(results / "robustness.json", group_of(MA))
    rob_o = robustness_scores(results / "robustness.json", group_of(other))
    for attack in rob_ma:
      if attack in rob_o:
        rows.append(claim(task, f"robustness: {attack}",
                          f"more accurate under {attack} (robustness)", other,
                          rob_ma[attack], rob_o[attack], better=+1, **common))
  return info, rows


def collect() -> tuple[list[dict], list[dict]]:
  """(one dict per task, one row per claim) from results/*/report.json."""
  reports = {path.parent: json.loads(path.read_text())
             for path in sorted((ROOT / "results").glob("*/report.json"))}
  infos, rows = [], []
  for results in reports:
    info, r = task_rows(results, reports)
    if info:
      infos.append(info)
      rows += r
  return infos, rows


def page(infos: list[dict], rows: list[dict]) -> str:
  lines = ["# The paper's claims, judged from our runs", "",
           "Made by `python scripts/claims.py` from `results/*/report.json` (and "
           "`robustness.json`); a test fails when this page is out of date. Each report says "
           "which command, machine and date made it. The paper (Ruan & Zhang, "
           "arXiv:2412.18288) claims that metric-attention trains to higher accuracy than "
           "self-attention and L2 attention, faster, with a smaller spread over seeds, and is "
           "more robust.", "", RULE, "## Tasks", ""]
  fmt_level = lambda v: "unknown" if v is None else "yes" if v else "no"
  lines += markdown_table(
      ["task", "results", "metric", "seeds per kind", "levelled off", "budget"],
      [[i["task"], f"[results/{i['results']}](../results/{i['results']}/report.md)",
        i["metric"], i["seeds"],
        ", ".join(f"{k} {fmt_level(v)}" for k, v in i["levelled"].items()), i["note"]]
       for i in infos])
  lines += ["", "## Verdicts by task", "",
            "One row per task and what MA is compared with; one cell per claim.", ""]
  claims = list(dict.fromkeys(r["key"] for r in rows))
  matrix = []
  for i in infos:
    for other, label in OTHERS.items():
      got = {r["key"]: r["verdict"] for r in rows if r["task"] == i["task"] and r["other"] == other}
      if got:
        matrix.append([i["task"], f"MA vs {label}", *(brief(got.get(c, "-")) for c in claims)])
  lines += markdown_table(["task", "comparison", *claims], matrix)
  lines += ["", "*: at this budget, the runs not levelled off or levelling not measured (see the "
            "rule). Undecided cells give their reason in the rows below."]
  lines += ["", "## Claims", ""]
  lines += markdown_table(
      ["task", "claim", "seeds", "difference (MA - other)", "95% bootstrap interval",
       "Welch p", "Mann-Whitney p", "paired t p", "Wilcoxon p", "verdict"],
      [[r["task"], r["claim"], r["n"], r["shown"], r["ci"], r["p"], r["mw"], r["paired"],
        r["wilcoxon"], f"**{r['verdict']}**"] for r in rows])
  counts = {}
  for r in rows:
    key = r["verdict"].split(" (")[0].split(" at ")[0]
    counts[key] = counts.get(key, 0) + 1
  lines += ["", "Verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + "."]
  return "\n".join(lines) + "\n"


README = ROOT / "README.md"
README_BLOCK = re.compile(r"(<!-- claims -->\n)(.*?)(<!-- /claims -->)", re.S)


def readme_table(infos: list[dict], rows: list[dict]) -> str:
  """The README's summary: per task, the final-metric claim against each comparison."""
  others = [o for o in OTHERS if any(r["other"] == o for r in rows)]
  table = []
  for i in infos:
    got = {r["other"]: r for r in rows if r["task"] == i["task"] and r["key"] == "accuracy"}
    table.append([i["task"], *(f"{got[o]['shown']}: {brief(got[o]['verdict'])}" if o in got
                               else "-" for o in others)])
  return "\n".join(markdown_table(
      ["task (budget)", *(f"MA - {OTHERS[o]}" for o in others)], table)) + "\n"


def render() -> tuple[str, str]:
  """(docs/claims.md, README.md) as they should be."""
  infos, rows = collect()
  readme = README.read_text()
  readme = README_BLOCK.sub(lambda m: m.group(1) + readme_table(infos, rows) + m.group(3),
                            readme)
  return page(infos, rows), readme


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--check", action="store_true", help="only say whether the page is stale")
  a = p.parse_args()
  stale = 0
  for path, text in zip((PAGE, README), render()):
    if path.exists() and path.read_text() == text:
      continue
    stale += 1
    if a.check:
      print(f"out of date: {path.relative_to(ROOT)}: run python scripts/claims.py")
    else:
      path.write_text(text)
      print(f"wrote {path.relative_to(ROOT)}")
  return 1 if a.check and stale else 0


if __name__ == "__main__":
  sys.exit(main())
