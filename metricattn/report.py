"""Summarise the runs under a root into report.md; reads only the workdirs.

  python -m metricattn.report runs/moons

Runs are grouped by their path below ROOT without the `seed=N` part (one group per grid
point, e.g. `attention=metric`). Per group: the final test metric's mean ± std, min and max
over seeds, the per-seed values, the final training loss and steps per second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

# The headline metric of a run, by preference.
METRICS = ("test/accuracy", "test/bleu", "val/accuracy", "val/bleu")


def load_runs(root: Path) -> list[dict]:
  """One dict per finished run: summary plus `group`, `seed`, `workdir`."""
  runs = []
  for path in sorted(root.rglob("summary.json")):
    workdir = path.parent
    summary = json.loads(path.read_text())
    config = json.loads((workdir / "config.json").read_text())
    parts = [p for p in workdir.relative_to(root).parts if not p.startswith("seed=")]
    runs.append({**summary, "group": "/".join(parts) or ".", "seed": config["seed"],
                 "workdir": str(workdir)})
  return runs


def headline_metric(runs: list[dict]) -> str:
  for m in METRICS:
    if all(m in r for r in runs):
      return m
  raise SystemExit(f"error: the runs share none of the metrics {', '.join(METRICS)}")


def fmt(x, digits: int = 4) -> str:
  return "n/a" if x is None else f"{x:.{digits}f}"


def summarize(values: list[float]) -> dict:
  return {"mean": statistics.fmean(values),
          "std": statistics.stdev(values) if len(values) > 1 else 0.0,
          "min": min(values), "max": max(values), "n": len(values)}


def render(root: Path, runs: list[dict]) -> str:
  metric = headline_metric(runs)
  groups: dict[str, list[dict]] = {}
  for r in sorted(runs, key=lambda r: (r["group"], r["seed"])):
    groups.setdefault(r["group"], []).append(r)
  lines = [f"# Report: {root}", "",
           f"{len(runs)} finished runs; headline metric `{metric}` (final evaluation). "
           "Std is the sample standard deviation over seeds.", "",
           f"| group | attention | seeds | {metric} mean ± std | min | max | "
           "final train loss (mean) | steps/s (mean) | params |",
           "|---|---|---|---|---|---|---|---|---|"]
  for name, rs in groups.items():
    s = summarize([r[metric] for r in rs])
    loss = statistics.fmean(r["train/loss"] for r in rs)
    sps = [r["steps_per_second"] for r in rs if r.get("steps_per_second")]
    lines.append(
        f"| {name} | {rs[0]['attention']} | {s['n']} | {fmt(s['mean'])} ± {fmt(s['std'])} | "
        f"{fmt(s['min'])} | {fmt(s['max'])} | {fmt(loss)} | "
        f"{fmt(statistics.fmean(sps), 1) if sps else 'n/a'} | {rs[0]['num_params']} |")
  lines += ["", "## Per seed", "", f"| group | seed | {metric} | final train loss | steps/s |",
            "|---|---|---|---|---|"]
  for name, rs in groups.items():
    for r in rs:
      lines.append(f"| {name} | {r['seed']} | {fmt(r[metric])} | {fmt(r['train/loss'])} | "
                   f"{fmt(r.get('steps_per_second'), 1)} |")
  platforms = sorted({f"{r.get('platform', '?')} x{r.get('devices', '?')}" for r in runs})
  lines += ["", f"Devices: {', '.join(platforms)}. Steps/s excludes compilation and "
            "evaluation pauses."]
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description="Write ROOT/report.md from the runs under ROOT.")
  p.add_argument("root", type=Path)
  a = p.parse_args(argv)
  runs = load_runs(a.root)
  if not runs:
    print(f"error: no finished runs (summary.json) under {a.root}", file=sys.stderr)
    return 2
  text = render(a.root, runs)
  (a.root / "report.md").write_text(text)
  print(text)
  print(f"wrote {a.root / 'report.md'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
