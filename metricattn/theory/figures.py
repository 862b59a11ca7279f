"""Matplotlib figures of the theory probes (Agg backend; each function writes one PNG)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from metricattn.theory.convergence import GridResult  # noqa: E402
from metricattn.theory.depth import DepthTrace  # noqa: E402


def convergence(res: GridResult, path: str) -> None:
  """Total error vs eps per N; bias vs eps; variance vs N eps^(d/2+1)."""
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
  eps = np.asarray(res.epss)
  colors = plt.cm.viridis(np.linspace(0, 0.9, len(res.ns)))
  for i, (n, c) in enumerate(zip(res.ns, colors)):
    axes[0].loglog(eps, res.total[i], "o-", color=c, ms=3, label=f"N={n}")
    j = int(np.argmin(res.total[i]))
    axes[0].loglog(eps[j], res.total[i, j], "*", color=c, ms=12, mec="k")
    neq = n * eps ** res.rate
    axes[2].loglog(neq, res.variance[i], "o", color=c, ms=4, label=f"N={n}")
  axes[0].loglog(eps, res.bias, "k--", label="bias (N = inf)")
  axes[0].set(xlabel="eps", ylabel="relative error", title=f"{res.manifold}: total error "
              "(star: best eps)")
  axes[0].legend(fontsize=7)
  slope, cb = res.bias_fit()
  axes[1].loglog(eps, res.bias, "ko-", label=f"bias, fitted slope {slope:.2f}")
  axes[1].loglog(eps, cb * eps, "r:", label="c_b * eps")
  axes[1].set(xlabel="eps", ylabel="relative bias", title="bias grows with eps")
  axes[1].legend(fontsize=8)
  vslope, cv = res.variance_fit()
  grid = np.logspace(np.log10(max(axes[2].get_xlim()[0], 1e-3)),
                     np.log10(axes[2].get_xlim()[1]), 50)
  axes[2].loglog(grid, cv / np.sqrt(grid), "r:",
                 label=f"c_v (N eps^q)^-1/2; fitted slope {vslope:.2f}")
  axes[2].set(xlabel=f"N eps^{res.rate:g}", ylabel="relative variance part",
              title="variance shrinks as N eps^(d/2+1) grows")
  axes[2].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def best_eps(results: list[GridResult], path: str) -> None:
  """Best grid eps and its error against N, with the fitted bias-variance prediction."""
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for res, c in zip(results, ("C0", "C1")):
    ns = np.asarray(res.ns)
    axes[0].loglog(ns, res.best_eps(), "o-", color=c, label=f"{res.manifold}: best grid eps")
    axes[0].loglog(ns, [res.predicted_best_eps(n) for n in ns], ":", color=c,
                   label=f"{res.manifold}: predicted")
    axes[1].loglog(ns, res.total.min(axis=1), "o-", color=c, label=res.manifold)
  axes[0].set(xlabel="N", ylabel="eps", title="best eps per N")
  axes[1].set(xlabel="N", ylabel="relative error at best eps", title="error at best eps")
  for ax in axes:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def nearest_circle(x: np.ndarray, n: np.ndarray, dot: np.ndarray, l2: np.ndarray,
                   path: str, title: str) -> None:
  """Arrows x -> output of one step, dot product (left) and metric kernel (right)."""
  fig, axes = plt.subplots(1, 2, figsize=(10, 5))
  t = np.linspace(0, 2 * np.pi, 200)
  for ax, out, name in ((axes[0], dot, "dot product"), (axes[1], l2, "metric (L2)")):
    ax.plot(np.cos(t), np.sin(t), color="0.8")
    ax.quiver(x[:, 0], x[:, 1], out[:, 0] - x[:, 0], out[:, 1] - x[:, 1], angles="xy",
              scale_units="xy", scale=1, width=0.004, color="C3")
    ax.plot(x[:, 0], x[:, 1], "k.", ms=5, label="x")
    ax.plot(n[:, 0], n[:, 1], "o", mfc="none", color="C0", ms=6, label="n(x) = A^T x/|A^T x|")
    ax.set(aspect="equal", title=f"{name}: x -> S x", xlim=(-1.2, 1.2), ylim=(-1.2, 1.2))
    ax.legend(fontsize=8, loc="lower right")
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def nearest_sphere(x: np.ndarray, n: np.ndarray, dot: np.ndarray, l2: np.ndarray,
                   path: str, title: str) -> None:
  """3-D arrows x -> output of one step on the sphere, dot product and metric kernel."""
  fig = plt.figure(figsize=(11, 5.5))
  for i, (out, name) in enumerate(((dot, "dot product"), (l2, "metric (L2)"))):
    ax = fig.add_subplot(1, 2, i + 1, projection="3d")
    d = out - x
    ax.quiver(x[:, 0], x[:, 1], x[:, 2], d[:, 0], d[:, 1], d[:, 2], color="C3",
              arrow_length_ratio=0.1, linewidth=0.8)
    ax.scatter(*x.T, color="k", s=6, label="x")
    ax.scatter(*n.T, facecolors="none", edgecolors="C0", s=14, label="n(x)")
    ax.set(title=f"{name}: x -> S x", xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1))
    ax.set_box_aspect((1, 1, 1))
    ax.legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def depth(traces: dict[str, list[DepthTrace]], path: str) -> None:
  """Rows: data sets; columns: rank, clusters and near-one eigenvalues, spread over depth."""
  fig, axes = plt.subplots(len(traces), 3, figsize=(15, 4 * len(traces)), squeeze=False)
  colors = {"softmax": "C3", "l2": "C0", "metric": "C2"}
  for row, (data, runs) in zip(axes, traces.items()):
    for tr in runs:
      layers = np.arange(1, len(tr.rank) + 1)
      style, marker = ("-", "o") if tr.scale is None else ("--", "s")
      lab = f"{tr.kind}, scale {'1/sqrt(d)' if tr.scale is None else tr.scale}"
      row[0].plot(layers, tr.rank, style, color=colors[tr.kind], label=lab)
      row[1].plot(layers, tr.clusters, style, color=colors[tr.kind])
      row[1].plot(layers, tr.near_one, ":", color=colors[tr.kind], marker=marker, ms=3,
                  lw=0.8)
      row[2].semilogy(layers, np.maximum(tr.spread, 1e-12), style, color=colors[tr.kind])
    row[0].set(xlabel="layer", ylabel="rank of H", title=f"{data}: feature rank")
    row[1].set(xlabel="layer", ylabel="count", yscale="log",
               title=f"{data}: clusters of H (lines), #eig(S) near 1 (dotted)")
    row[2].set(xlabel="layer", ylabel="spread / initial spread",
               title=f"{data}: spread (floored at 1e-12)")
    row[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
