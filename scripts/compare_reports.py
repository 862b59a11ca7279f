"""How far two runs of the same experiment are apart, seed by seed (e.g. on two CPUs).

  python scripts/compare_reports.py OLD/report.json NEW/report.json

For every group of OLD: the largest per-seed difference of the headline metric and of the
final training loss against NEW (the same seeds), and whether the metric is bitwise equal.
A report may be a committed one: `git show COMMIT:results/moons/report.json > old.json`.
"""

from __future__ import annotations

import json
import sys


def compare(old: dict, new: dict) -> list[str]:
  lines = []
  for name, a in old["groups"].items():
    b = new["groups"].get(name)
    if b is None or a["seeds"] != b["seeds"]:
      lines.append(f"{name}: {'missing' if b is None else 'other seeds'} in the second report")
      continue
    metric = max(abs(x - y) for x, y in zip(a["final_values"], b["final_values"]))
    loss = max(abs(p["final_loss"] - q["final_loss"]) for p, q in zip(a["per_run"], b["per_run"]))
    lines.append(f"{name}: {len(a['seeds'])} seeds, {old['metric']} "
                 f"{'bitwise equal' if metric == 0 else f'max |difference| {metric:.3g}'}, "
                 f"final train loss max |difference| {loss:.3g}")
  return lines


def main(argv: list[str]) -> int:
  if len(argv) != 2:
    print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
    return 2
  old, new = (json.load(open(p)) for p in argv)
  print("\n".join(compare(old, new)))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
