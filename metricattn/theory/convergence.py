"""Error of the attention estimate of L H over a grid of N and eps, split into bias and variance.

For one manifold, one seeded draw X of N_max points is made and X[:N] is the sample of size N
(nested samples, so the N-trend is not blurred by independent draws). For each (N, eps):

  total     ||est - L H|| / ||L H|| over all N sample points and all test functions
  variance  ||est - pop|| / ||L H|| over the first min(n_sub, min(ns)) points, pop being
            the N = infinity estimate (`population_estimate`, quadrature) at the same points
  bias      ||pop - L H|| / ||L H|| over the same points (depends on eps only)

Theory (Singer 2006): bias ~ c_b eps, variance ~ c_v / sqrt(N eps^(d/2 + 1)).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from metricattn.theory import operator as op


@dataclasses.dataclass
class GridResult:
  """Errors of one manifold. Shapes: total, variance [len(ns), len(epss)]; bias [len(epss)]."""
  manifold: str
  dim: int
  ns: list[int]
  epss: list[float]
  total: np.ndarray
  variance: np.ndarray
  bias: np.ndarray
  constants: list[tuple[float, float]]     # (alpha, beta) of the population estimate per eps
  seconds: float
  n_sub: int                               # points of the bias / variance split

  @property
  def rate(self) -> float:
    """The exponent q = d/2 + 1 in N eps^q."""
    return self.dim / 2 + 1

  def best_eps(self) -> list[float]:
    """Grid eps of least total error, per N."""
    return [self.epss[i] for i in np.argmin(self.total, axis=1)]

  def bias_fit(self, max_eps: float = 2 ** -4) -> tuple[float, float]:
    """(slope, c_b): log-log slope of bias vs eps, and the median bias / eps, for eps <= max_eps."""
    e = np.asarray(self.epss)
    sel = e <= max_eps
    slope = np.polyfit(np.log(e[sel]), np.log(self.bias[sel]), 1)[0]
    return float(slope), float(np.median(self.bias[sel] / e[sel]))

  def variance_fit(self, min_neq: float = 10.0) -> tuple[float, float]:
    """(slope, c_v): log-log slope of variance vs N eps^q, and median variance * sqrt(N eps^q),
    over the grid cells with N eps^q >= min_neq."""
    neq = np.outer(self.ns, np.asarray(self.epss) ** self.rate)
    sel = neq >= min_neq
    slope = np.polyfit(np.log(neq[sel]), np.log(self.variance[sel]), 1)[0]
    return float(slope), float(np.median(self.variance[sel] * np.sqrt(neq[sel])))

  def predicted_best_eps(self, n: int) -> float:
    """argmin of (c_b eps)^2 + c_v^2 / (N eps^q): eps^(q+2) = q c_v^2 / (2 c_b^2 N)."""
    _, cb = self.bias_fit()
    _, cv = self.variance_fit()
    q = self.rate
    return float((q * cv * cv / (2 * cb * cb * n)) ** (1.0 / (q + 2)))

  def best_eps_exponent(self) -> float:
    """Slope of log(best grid eps) against log N (theory: -1/(3 + d/2))."""
    return float(np.polyfit(np.log(self.ns), np.log(self.best_eps()), 1)[0])


def run_grid(manifold, ns: list[int], epss: list[float], *, seed: int, n_sub: int = 1000,
             block: int = 1024, log=print) -> GridResult:
  """Runs the (N, eps) grid on one manifold; see the module docstring."""
  t0 = time.time()
  x_all = manifold.sample(max(ns), seed)
  h_all, lh_all = manifold.functions(x_all), manifold.operator(x_all)
  sub = slice(0, min(n_sub, min(ns)))
  lh_sub = lh_all[sub]
  pops = [op.population_estimate(manifold, x_all[sub], eps) for eps in epss]
  bias = np.array([op.relative_error(p, lh_sub) for p in pops])
  constants = [op.fit_constants(manifold, x_all[sub], p) for p in pops]
  total = np.zeros((len(ns), len(epss)))
  variance = np.zeros_like(total)
  for i, n in enumerate(ns):
    x, h = x_all[:n], h_all[:n]
    for j, eps in enumerate(epss):
      est = op.diffusion_estimate(x, h, eps, block=block)
      total[i, j] = op.relative_error(est, lh_all[:n])
      variance[i, j] = np.linalg.norm(est[sub] - pops[j]) / np.linalg.norm(lh_sub)
    log(f"  {manifold.name} N={n}: best eps {epss[int(np.argmin(total[i]))]:.4g}, "
        f"error {total[i].min():.4f} ({time.time() - t0:.0f} s)")
  return GridResult(manifold.name, manifold.dim, list(ns), list(epss), total, variance, bias,
                    constants, time.time() - t0, sub.stop)
