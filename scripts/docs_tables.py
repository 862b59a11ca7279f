"""Rewrites the result tables in docs/*.md from the committed reports, so no number is typed.

  python scripts/docs_tables.py [--check]

A table is a block between `<!-- table results/NAME -->` and `<!-- /table -->`; it is
rebuilt from results/NAME/report.json (per attention kind: seeds, the headline metric's mean
± std, min, max, steps to the target, final training loss, steps/s, parameters; then each
kind against softmax). A report that chose each kind's setting on val (a grid over the
learning rate) shows each kind at its chosen setting, named in parentheses. `--check` only
says which blocks are out of date (exit 1 if any).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metricattn.comparison import fmt_p, metric_digits, target_cell
from metricattn.reporting import fmt, mean_std  # noqa: E402
from metricattn.reporting import markdown_table  # noqa: E402

BLOCK = re.compile(r"(<!-- table (\S+) -->\n)(.*?)(<!-- /table -->)", re.S)


def table(results: str) -> str:
  report = json.loads((ROOT / results / "report.json").read_text())
  metric, chosen = report["metric"], report.get("chosen")
  groups = {n: report["groups"][n] for n in chosen.values()} if chosen else report["groups"]
  d = metric_digits(metric)

  def label(name: str) -> str:   # 'attention=l2/optimizer.lr=3e-4' -> 'l2 (optimizer.lr=3e-4)'
    kind = report["groups"][name]["attention"]
    rest = "/".join(p for p in name.split("/") if not p.startswith("attention="))
    return f"{kind} ({rest})" if rest else kind

  rows = [[label(n), g["final"]["n"], mean_std(g["final"], d), fmt(g["final"]["min"], d),
           fmt(g["final"]["max"], d), target_cell(g), fmt(g["final_loss"]),
           fmt(g["steps_per_second"], 1), f"{g['num_params']:,}"] for n, g in groups.items()]
  target = report.get("target")
  lines = markdown_table(
      ["attention", "seeds", f"{metric} mean ± std", "min", "max",
       f"steps to {fmt(target, d) if target is not None else 'target'} (median, reached)",
       "final train loss", "steps/s", "params"], rows)
  comps = [[label(c["group"]), f"{c['diff']:+.{d}f}",
            "n/a (< 5 seeds)" if c["ci_low"] is None
            else f"[{c['ci_low']:+.{d}f}, {c['ci_high']:+.{d}f}]", fmt_p(c["welch_p"]),
            fmt_p(c["mannwhitney_p"])]
           for c in report.get("chosen_comparisons" if chosen else "comparisons", [])]
  if comps:
    lines += [""] + markdown_table(["against softmax", "difference of means",
                                    "95% bootstrap interval", "Welch t p",
                                    "Mann-Whitney U p"], comps)
  return "\n".join(lines) + "\n"


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--check", action="store_true", help="only report out-of-date blocks")
  a = p.parse_args()
  stale = 0
  for page in sorted((ROOT / "docs").glob("*.md")):
    text = page.read_text()
    new = BLOCK.sub(lambda m: m.group(1) + table(m.group(2)) + m.group(4), text)
    if new != text:
      stale += 1
      print(f"{'out of date' if a.check else 'rewrote'}: {page.relative_to(ROOT)}")
      if not a.check:
        page.write_text(new)
  return 1 if a.check and stale else 0


if __name__ == "__main__":
  sys.exit(main())
