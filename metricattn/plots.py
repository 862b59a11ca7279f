"""Figures of a report (matplotlib, Agg backend, PNG): curves with a band over seeds, violins.

A curve is (steps, values). A group's curves are aligned on the steps every seed logged; the
line is the mean over seeds and the band spans min..max over seeds (each legend says so).
Lines of few points (<= MARKERS_UP_TO) carry markers, so a single evaluation is visible.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from metricattn import stats
from metricattn.fileio import write_atomic

Curve = tuple[list[int], list[float]]
BAND = "band: min..max over seeds"
MARKERS_UP_TO = 20


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save(fig, path: Path, title: str = "") -> Path:
  """Adds the figure title, writes the PNG and frees the figure."""
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110)
  _pyplot().close(fig)
  write_atomic(path, buf.getvalue())  # a full disk leaves the figure before in place
  return path


def align(curves: list[Curve]) -> tuple[np.ndarray, np.ndarray]:
  """(steps [t], values [seeds, t]) on the steps that every curve has."""
  common = sorted(set.intersection(*(set(s) for s, _ in curves))) if curves else []
  rows = [[dict(zip(s, v))[t] for t in common] for s, v in curves]
  return np.asarray(common), np.asarray(rows, np.float64).reshape(len(curves), len(common))


def seeds_label(name: str, n: int) -> str:
  return f"{name} (n = 1, no spread)" if n < 2 else f"{name} (n={n})"


LEGEND_INSIDE_UP_TO = 4  # entries; more go below the panel, where they hide no curve or label


def legend(ax) -> None:
  """The legend, titled with what the bands are when some group has a band (two or more
  seeds); inside the panel up to LEGEND_INSIDE_UP_TO entries, below it beyond."""
  handles, labels = ax.get_legend_handles_labels()
  if not handles:
    return
  title = BAND if any(label != seeds_label(label.rsplit(" (", 1)[0], 1) for label in labels) \
      else None
  if len(handles) <= LEGEND_INSIDE_UP_TO:
    ax.legend(fontsize=8, title=title, title_fontsize=7)
  else:
    ax.legend(fontsize=7, title=title, title_fontsize=7, loc="upper center",
              bbox_to_anchor=(0.5, -0.15), ncol=2)


def band(ax, curves: list[Curve], label: str, color) -> None:
  """Mean line and min..max band of `curves` on `ax` (markers on lines of few points)."""
  steps, values = align(curves)
  if not len(steps):
    return
  marker = "o" if len(steps) <= MARKERS_UP_TO else None
  ax.plot(steps, values.mean(0), color=color, marker=marker, ms=4,
          label=seeds_label(label, len(curves)))
  ax.fill_between(steps, values.min(0), values.max(0), color=color, alpha=0.2, linewidth=0)


def curves_figure(groups: dict[str, dict[str, list[Curve]]], panels: list[tuple[str, str]]):
  """One panel per (key, y-label) of `panels`; groups[name][key] are that group's curves."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, (key, ylabel) in zip(axes[0], panels):
    for i, (name, curves) in enumerate(groups.items()):
      band(ax, curves[key], name, colors[i % len(colors)])
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    legend(ax)
  return fig


def plot_curves(groups: dict[str, dict[str, list[Curve]]], panels: list[tuple[str, str]],
                path: Path, title: str = "") -> Path:
  """curves_figure written to `path`."""
  return save(curves_figure(groups, panels), path, title)


def plot_violin(values: dict[str, list[float]], ylabel: str, path: Path,
                title: str = "") -> Path:
  """Violin of each group's values with the individual values drawn on top."""
  plt = _pyplot()
  names = list(values)
  fig, ax = plt.subplots(figsize=(1.8 * len(names) + 2, 4))
  data = [np.asarray(values[n], np.float64) for n in names]
  has_spread = [len(d) > 1 and not stats.constant(d) for d in data]
  spread = [d for d, h in zip(data, has_spread) if h]
  if spread:  # a violin needs spread; constant groups are shown by their points only
    pos = [i + 1 for i, h in enumerate(has_spread) if h]
    ax.violinplot(spread, positions=pos, showmedians=True)
  rng = np.random.default_rng(0)
  for i, d in enumerate(data, 1):
    ax.scatter(i + rng.uniform(-0.06, 0.06, len(d)), d, s=12, color="k", zorder=3)
  ticks = [seeds_label(n, len(d)) if len(d) < 2 else n for n, d in zip(names, data)]
  ax.set_xticks(range(1, len(names) + 1), ticks, rotation=15, fontsize=8)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3, axis="y")
  if title:
    ax.set_title(title, fontsize=10)
  return save(fig, path)


def strengths_figure(results: dict[str, dict[str, list[tuple[float, list[float]]]]],
                     panels: list[tuple[str, str]]):
  """Accuracy against attack or noise strength: results[group][attack] = [(strength,
  accuracies over seeds)]; one panel per (attack, x-label); mean line, min..max band."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, (attack, xlabel) in zip(axes[0], panels):
    for i, (name, by_attack) in enumerate(results.items()):
      points = by_attack.get(attack, [])
      if not points:
        continue
      x = np.asarray([p[0] for p in points])
      ys = [np.asarray(p[1], np.float64) for p in points]
      c = colors[i % len(colors)]
      ax.plot(x, [y.mean() for y in ys], "o-", color=c, ms=3,
              label=seeds_label(name, len(ys[0])))
      ax.fill_between(x, [y.min() for y in ys], [y.max() for y in ys], color=c, alpha=0.2,
                      linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    legend(ax)
  return fig


def plot_strengths(results: dict[str, dict[str, list[tuple[float, list[float]]]]],
                   panels: list[tuple[str, str]], path: Path, title: str = "") -> Path:
  """strengths_figure written to `path`."""
  return save(strengths_figure(results, panels), path, title)
