"""Statistics of runs over seeds: summaries, curve measures, comparisons of two groups.

Pure functions of lists of numbers (NumPy and SciPy on the host); `metricattn.report` uses
them, and tests check them on known inputs.
"""

from __future__ import annotations

import math

import numpy as np


# Values whose range is at most this times max(1, largest |value|) count as equal: runs that
# differ only by floating-point rounding have no spread.
RTOL = 1e-12


def constant(values: list[float]) -> bool:
  """True when `values` are all equal up to rounding (range <= RTOL * max(1, max |value|))."""
  v = np.asarray(values, np.float64)
  return not len(v) or float(np.ptp(v)) <= RTOL * max(1.0, float(np.abs(v).max()))


def summarize(values: list[float]) -> dict:
  """mean, std (sample, ddof 1; None for one value, 0 for values equal up to rounding),
  median, min, max and n of `values`."""
  v = np.asarray(values, np.float64)
  std = None if len(v) < 2 else 0.0 if constant(v) else float(v.std(ddof=1))
  return {"mean": float(v.mean()), "std": std, "median": float(np.median(v)),
          "min": float(v.min()), "max": float(v.max()), "n": len(v)}


# ---------------------------------------------------------------- curves

def curve_auc(steps: list[float], values: list[float]) -> float | None:
  """Trapezoid area under `values` over `steps`, divided by the step span.

  The result is the curve's average height (for a training-loss curve: the mean loss over
  training), so it does not grow with the budget. None for fewer than two points.
  """
  s, v = np.asarray(steps, np.float64), np.asarray(values, np.float64)
  if len(s) < 2 or s[-1] == s[0]:
    return None
  area = float(np.sum((s[1:] - s[:-1]) * (v[1:] + v[:-1]) / 2))
  return area / float(s[-1] - s[0])


def jitter(values: list[float]) -> float | None:
  """Mean absolute change between consecutive logged values; None for fewer than two."""
  v = np.asarray(values, np.float64)
  return float(np.mean(np.abs(np.diff(v)))) if len(v) > 1 else None


def first_reaching(steps: list[int], values: list[float], target: float) -> int | None:
  """The first step whose value is at least `target` (higher is better), or None."""
  for s, v in zip(steps, values):
    if v >= target:
      return int(s)
  return None


# The share of a run's steps whose gain `late_gain` measures.
LATE = 0.2


def late_gain(steps: list[int], values: list[float]) -> float | None:
  """How much a curve still rose over the last LATE of its steps: the last value minus the
  value at the last evaluation at or before (1 - LATE) x the last step; None without such an
  evaluation. Near zero (or negative) when the run has levelled off."""
  if len(steps) < 2:
    return None
  before = [v for s, v in zip(steps, values) if s <= (1 - LATE) * steps[-1]]
  return float(values[-1] - before[-1]) if before else None


# ---------------------------------------------------------------- two groups

def bootstrap_diff(a: list[float], b: list[float], *, reps: int = 10_000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float, float]:
  """mean(a) - mean(b) and its percentile bootstrap interval at `level`.

  Each group is resampled with replacement on its own (the groups are independent runs);
  the generator is seeded, so the interval is reproducible. Two groups without spread give
  the difference of their values as a point (0 when all values are equal up to rounding).
  """
  x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if constant(x) and constant(y):
    d = 0.0 if constant(np.concatenate([x, y])) else float(x[0] - y[0])
    return d, d, d
  rng = np.random.default_rng(seed)
  mx = x[rng.integers(0, len(x), (reps, len(x)))].mean(1)
  my = y[rng.integers(0, len(y), (reps, len(y)))].mean(1)
  tail = (1 - level) / 2 * 100
  lo, hi = np.percentile(mx - my, [tail, 100 - tail])
  return float(x.mean() - y.mean()), float(lo), float(hi)


def _p_value(p: float) -> float | None:
  return None if p is None or math.isnan(p) else float(min(max(p, 0.0), 1.0))


def _quiet(test, *args, **kwargs):
  """A scipy test without its RuntimeWarning for nearly equal values (catastrophic
  cancellation): such groups are handled by `constant` before, or give a large p."""
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return test(*args, **kwargs)


def welch_p(a: list[float], b: list[float]) -> float | None:
  """Two-sided Welch's t-test p-value; None for fewer than two runs in a group. Two groups
  without spread (up to rounding) give 1 for equal values, else 0."""
  from scipy import stats
  if len(a) < 2 or len(b) < 2:
    return None
  if constant(a) and constant(b):
    return 1.0 if constant(list(a) + list(b)) else 0.0
  return _p_value(_quiet(stats.ttest_ind, a, b, equal_var=False).pvalue)


def _ranked(values) -> list[float]:
  """Values at 12 significant digits, so rounding-level differences are ties."""
  return [float(f"{x:.12g}") for x in values]


def mannwhitney_p(a: list[float], b: list[float]) -> float | None:
  """Two-sided Mann-Whitney U p-value; None when undefined (an empty group). Values are
  ranked at 12 significant digits, so rounding-level differences are ties."""
  from scipy import stats
  if not len(a) or not len(b):
    return None
  if constant(list(a) + list(b)):  # all values tied: no evidence of a difference
    return 1.0
  return _p_value(stats.mannwhitneyu(_ranked(a), _ranked(b), alternative="two-sided").pvalue)


def brown_forsythe_p(a: list[float], b: list[float]) -> float | None:
  """Two-sided p-value of the Brown-Forsythe test (Levene's test about the median) that the
  two groups have equal spread; None for fewer than three runs in a group (two values are
  always equally far from their median: the test degenerates), 1 when neither group has
  spread (up to rounding)."""
  from scipy import stats
  if len(a) < 3 or len(b) < 3:
    return None
  if constant(a) and constant(b):
    return 1.0
  return _p_value(_quiet(stats.levene, _ranked(a), _ranked(b), center="median").pvalue)


def paired(a: dict[int, float], b: dict[int, float]) -> dict:
  """Tests paired by seed: the seeds both groups ran (`a`, `b`: seed -> value), the mean of
  the differences a - b, and two-sided p-values of the paired t-test and of Wilcoxon's
  signed-rank test (None with fewer than two pairs; 1 when no pair differs, up to
  rounding)."""
  from scipy import stats
  seeds = sorted(set(a) & set(b))
  d = [a[s] - b[s] for s in seeds]
  out = {"pairs": len(seeds), "paired_diff": float(np.mean(d)) if d else None,
         "paired_t_p": None, "wilcoxon_p": None}
  if len(seeds) < 2:
    return out
  nonzero = [v for v in _ranked(d) if v != 0.0]
  if constant(d):  # the t statistic is undefined: no difference, or the same one every seed
    out["paired_t_p"] = 0.0 if nonzero else 1.0
  else:
    out["paired_t_p"] = _p_value(_quiet(stats.ttest_rel, [a[s] for s in seeds],
                                        [b[s] for s in seeds]).pvalue)
  out["wilcoxon_p"] = _p_value(_quiet(stats.wilcoxon, nonzero).pvalue) if nonzero else 1.0
  return out


# A bootstrap of fewer runs than this per group is not reported: with 2-4 values the
# resampled means take a handful of values and the interval says little.
MIN_BOOTSTRAP = 5


def compare(a: list[float], b: list[float], *, seeds_a: list[int] | None = None,
            seeds_b: list[int] | None = None, seed: int = 0) -> dict:
  """Difference of means of a over b with its 95% bootstrap interval (None, None when a
  group has fewer than MIN_BOOTSTRAP runs), Welch and Mann-Whitney p-values, the
  Brown-Forsythe p-value for equal spread and, given the runs' seeds, the tests paired by
  seed (`paired`)."""
  if min(len(a), len(b)) >= MIN_BOOTSTRAP:
    diff, lo, hi = bootstrap_diff(a, b, seed=seed)
  else:
    diff, lo, hi = float(np.mean(a) - np.mean(b)), None, None
  out = {"diff": diff, "ci_low": lo, "ci_high": hi, "welch_p": welch_p(a, b),
         "mannwhitney_p": mannwhitney_p(a, b), "brown_forsythe_p": brown_forsythe_p(a, b)}
  if seeds_a is not None and seeds_b is not None:
    out.update(paired(dict(zip(seeds_a, a)), dict(zip(seeds_b, b))))
  return out
