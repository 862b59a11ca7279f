"""Matplotlib figures of the theory probes (Agg backend; each function writes one PNG through
`metricattn.plots.save`)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from metricattn.plots import save  # noqa: E402
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
  save(fig, path)


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
  save(fig, path)


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
  save(fig, path, title)


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
  save(fig, path, title)


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
  save(fig, path)


KIND_COLORS = {"softmax": "C3", "l2": "C0", "metric": "C2"}


def trained_stats(results: list, path: str) -> None:
  """Trained Moon IPNs over layers, one line per run (solid: trained, dashed: init):
  asymmetry, negative mass, clusters and #eig(S) near 1, lambda2, same-class weight,
  sigma_2 / sigma_1."""
  fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
  axes = axes.ravel()
  first = min(q.seed for q in results)
  for r in results:
    color, style = KIND_COLORS[r.kind], "-" if r.state == "trained" else "--"
    lab = f"{r.kind} ({r.state})" if r.seed == first else None
    att = [l for l in r.layers if l.asym is not None]
    at = [l.layer for l in att]
    kw = dict(color=color, marker="o", ms=3, lw=0.8)
    axes[0].semilogy(at, [max(l.asym, 1e-9) for l in att], style, label=lab, **kw)
    axes[1].semilogy(at, [max(l.neg, 1e-9) for l in att], style, **kw)
    layers = [l.layer for l in r.layers]
    if r.state == "trained":
      axes[2].semilogy(layers, [l.clusters for l in r.layers], style, color=color, lw=0.8)
      axes[2].semilogy(at, [l.near_one for l in att], "x", color=color, ms=6)
    axes[3].plot(at, [l.lambda2 for l in att], style, **kw)
    axes[4].plot(at, [l.same_class for l in att], style, **kw)
    axes[5].semilogy(layers, [max(l.sv[1], 1e-9) for l in r.layers], style, **kw)
  axes[0].set(ylabel="||A(C)|| / ||C||", title="asymmetry of the logits, offsets removed")
  axes[1].set(ylabel="negative mass", title="non-metric part: negative eigenvalues of sym(C)")
  axes[2].set(ylabel="count", title="trained: clusters of H (lines), #eig(S) near 1 (x)")
  axes[3].set(ylabel="lambda2", title="second largest |eigenvalue| of S")
  axes[4].set(ylabel="weight", title="attention weight on the own class")
  axes[5].set(ylabel="sigma_2 / sigma_1", title="second singular value of H")
  axes[0].legend(fontsize=7)
  ticks = sorted({l.layer for r in results for l in r.layers})
  for ax in axes:
    ax.set_xticks(ticks)
    ax.set_xlabel("layer (0 = embedding)")
  save(fig, path)


def trained_matrices(runs: dict[str, dict], path: str, title: str) -> None:
  """Per kind (rows): S of each layer and A(C) of layer 1, points sorted by class and x;
  last column the final features (top two principal components) coloured by class."""
  n_layers = len(next(iter(runs.values()))["mats"])
  cols = n_layers + 2
  fig, axes = plt.subplots(len(runs), cols, figsize=(3.6 * cols, 3.4 * len(runs)),
                           squeeze=False)
  for row, (kind, m) in zip(axes, runs.items()):
    order = np.lexsort((m["x"][:, 0], m["y"]))
    for j, (s, _) in enumerate(m["mats"]):
      norm = matplotlib.colors.LogNorm(vmin=max(s.min(), 1e-5), vmax=s.max())
      im = row[j].imshow(np.maximum(s[np.ix_(order, order)], 1e-5), cmap="viridis", norm=norm)
      row[j].set_title(f"{kind}: S, layer {j + 1} (log colours)", fontsize=9)
      fig.colorbar(im, ax=row[j], fraction=0.046)
    anti = m["mats"][0][1][np.ix_(order, order)]
    lim = max(np.abs(anti).max(), 1e-12)
    im = row[n_layers].imshow(anti, cmap="RdBu_r", vmin=-lim, vmax=lim)
    row[n_layers].set_title(f"{kind}: A(C), layer 1\nmax |A(C)| = {lim:.2g}", fontsize=9)
    fig.colorbar(im, ax=row[n_layers], fraction=0.046)
    h = m["h"] - m["h"].mean(0)
    pcs = h @ np.linalg.svd(h, full_matrices=False)[2][:2].T
    for cls, mk in ((0, "o"), (1, "s")):
      sel = m["y"] == cls
      row[-1].scatter(pcs[sel & ~m["is_test"], 0], pcs[sel & ~m["is_test"], 1], s=10,
                      marker=mk, color=f"C{cls}", label=f"class {cls}, context")
      row[-1].scatter(pcs[sel & m["is_test"], 0], pcs[sel & m["is_test"], 1], s=10,
                      marker=mk, facecolors="none", edgecolors=f"C{cls}",
                      label=f"class {cls}, test")
    row[-1].set_title(f"{kind}: features after layer {n_layers} (PCA)", fontsize=9)
    row[-1].legend(fontsize=6)
  save(fig, path, title)
