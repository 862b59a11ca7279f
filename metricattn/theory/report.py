"""Runs the three theory probes and writes `report.md`, `results.json` and PNG figures.

  python -m metricattn.theory --out results/theory [--quick] [--seed 0]

The trained-IPN probe is a subcommand with its own report (`metricattn.theory.trained`):

  python -m metricattn.theory trained [--runs ROOT] [--budget quick] [--out DIR]

Every number in the report is computed by this run; the text around the numbers is fixed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time

import numpy as np

from metricattn.reporting import machine_description, markdown_table
from metricattn.theory import depth as depth_lib
from metricattn.theory import figures
from metricattn.theory import nearest as nearest_lib
from metricattn.theory.convergence import GridResult, run_grid
from metricattn.theory.manifolds import Circle, Sphere

FULL = dict(ns=[500, 1000, 2000, 5000, 10000, 20000, 50000],
            epss=[2.0 ** -k for k in range(10, 0, -1)],
            nearest_n=2000, nearest_sample_ns=[100, 1000, 10000], depth=48, depth_n=240)
QUICK = dict(ns=[500, 1000, 2000, 4000], epss=[2.0 ** -k for k in range(8, 1, -1)],
             nearest_n=500, nearest_sample_ns=[100, 1000], depth=12, depth_n=120)
NEAREST_EPS = (0.5, 0.125, 0.03125)
DEPTH_DIM = 16


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      prog="python -m metricattn.theory", description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      usage="%(prog)s [-h] [--out OUT] [--quick] [--seed SEED] [--block BLOCK]\n"
            "       %(prog)s trained [-h] [--runs ROOT] [--budget BUDGET] [--out OUT]",
      epilog="subcommands:\n  trained  per-layer asymmetry and clustering of the Moon IPNs "
             "of the moons experiment's\n           finished runs; see "
             "`python -m metricattn.theory trained --help`")
  p.add_argument("--out", default="results/theory", help="output directory")
  p.add_argument("--quick", action="store_true", help="small N grid (about a minute)")
  p.add_argument("--seed", type=int, default=0, help="seed of every sample and layer")
  p.add_argument("--block", type=int, default=1024, help="queries per attention block")
  return p.parse_args(argv)


def g(v: float, digits: int = 3) -> str:
  return f"{v:.{digits}g}"


# ---------------------------------------------------------------- part 1: convergence

def convergence_section(grids: list[GridResult], out: str) -> tuple[str, dict]:
  """Runs nothing: formats the grids, writes their figures, returns (markdown, json)."""
  md, js = [], {}
  for res in grids:
    figures.convergence(res, os.path.join(out, f"convergence_{res.manifold}.png"))
    bslope, cb = res.bias_fit()
    vslope, cv = res.variance_fit()
    best = res.best_eps()
    rows = [[n, g(e), g(res.total[i].min()), g(res.variance[i, res.epss.index(e)]),
             g(res.bias[res.epss.index(e)]), g(res.predicted_best_eps(n))]
            for i, (n, e) in enumerate(zip(res.ns, best))]
    md.append(f"### {res.manifold} (d = {res.dim}), {res.seconds:.0f} s\n")
    md += markdown_table(["N", "best eps (grid)", "error at best eps", "variance part",
                          "bias part", "predicted best eps"], rows)
    md.append("")
    md.append(f"- Bias vs eps (eps <= 1/16): log-log slope {bslope:.2f} (theory 1), "
              f"c_b = {g(cb)}.")
    md.append(f"- Variance vs N eps^{res.rate:g} (cells with N eps^q >= 10): log-log slope "
              f"{vslope:.2f} (theory -0.5), c_v = {g(cv)}.")
    md.append(f"- Best grid eps against N: log-log slope {res.best_eps_exponent():.2f} "
              f"(theory -1/(3 + d/2) = {-1 / (3 + res.dim / 2):.3f}; the grid is in factors "
              "of 2, so this is coarse).")
    md.append("\nFull error table (rows N, columns eps), total relative error:\n")
    md += markdown_table(["N \\ eps"] + [g(e) for e in res.epss],
                         [[n] + [g(v, 2) for v in res.total[i]] for i, n in enumerate(res.ns)])
    md.append(f"\n![{res.manifold}](convergence_{res.manifold}.png)\n")
    js[res.manifold] = dict(ns=res.ns, epss=res.epss, total=res.total.tolist(),
                            variance=res.variance.tolist(), bias=res.bias.tolist(),
                            constants=res.constants, best_eps=best, seconds=res.seconds,
                            bias_slope=bslope, variance_slope=vslope)
  figures.best_eps(grids, os.path.join(out, "best_eps.png"))
  md.append("![best eps](best_eps.png)\n")
  return "\n".join(md), js


def constants_section(grids: list[GridResult]) -> str:
  """The fitted (alpha, beta) of the N = infinity estimate, per eps."""
  rows = []
  for res in grids:
    for eps, b, (al, be) in zip(res.epss, res.bias, res.constants):
      rows.append([res.manifold, g(eps), g(b), f"{al:.4f}", f"{be:.4f}"])
  return "\n".join(markdown_table(
      ["manifold", "eps", "bias (N = inf)", "alpha (Laplacian)", "beta (drift)"], rows))


# ---------------------------------------------------------------- part 2: nearest point

def nearest_cases() -> list[tuple[str, object, np.ndarray]]:
  """(label, manifold, A): a rotation on the circle, a generic A and the control 2I on S^2."""
  return [
      ("circle, A = 2 R(60 deg)", Circle(), 2.0 * nearest_lib.rotation2(np.pi / 3)),
      ("sphere, A = R((1,1,1), 90 deg) diag(2, 1, 0.5)", Sphere(),
       nearest_lib.rotation([1, 1, 1], np.pi / 2) @ np.diag([2.0, 1.0, 0.5])),
      ("sphere, A = 2 I (control: symmetric, n(x) = x)", Sphere(), 2.0 * np.eye(3)),
  ]


def nearest_section(cfg: dict, seed: int, out: str) -> tuple[str, dict]:
  rows, sample_rows, js = [], [], {}
  for label, man, a in nearest_cases():
    x = man.sample(cfg["nearest_n"], seed)
    for eps in NEAREST_EPS:
      d = nearest_lib.displacement(a, x, eps)
      js[f"{label} | eps={eps}"] = d
      rows.append([label, g(eps), f"{d['x_to_n']:.1f}", f"{d['dot_to_x']:.1f}",
                   f"{d['dot_to_n']:.1f}", f"{d['dot_move']:.3f}", f"{d['l2_to_x']:.1f}",
                   f"{d['l2_to_n']:.1f}", f"{d['l2_move']:.3f}"])
    if "control" in label:
      continue
    n_exact = nearest_lib.nearest_point(a, x[:500])
    for n in cfg["nearest_sample_ns"]:
      y = man.sample(n, seed + 1)
      err = nearest_lib.angle_deg(nearest_lib.sample_nearest_point(a, x[:500], y), n_exact)
      sample_rows.append([label, n, f"{err.mean():.3f}", f"{err.max():.3f}"])
    stride, eps = max(1, len(x) // 40), 0.125
    sub = x[::stride]
    args = (sub, nearest_lib.nearest_point(a, sub), nearest_lib.dot_step(a, x, eps)[::stride],
            nearest_lib.l2_step(x, eps)[::stride])
    title = f"{label}, eps = {eps}; arrows: one attention step on {len(x)} samples"
    if man.name == "circle":
      figures.nearest_circle(*args, os.path.join(out, "nearest_circle.png"), title)
    else:
      figures.nearest_sphere(*args, os.path.join(out, "nearest_sphere.png"), title)
  md = [*markdown_table(["case", "eps", "angle(x, n(x))", "dot: angle(Sx, x)",
                         "dot: angle(Sx, n(x))", "dot: mean dist(Sx, x)", "L2: angle(Sx, x)",
                         "L2: angle(Sx, n(x))", "L2: mean dist(Sx, x)"], rows),
        "\nSampled nearest point (argmin over N samples) against the analytic A^T x/|A^T x|, "
        "angle in degrees over 500 query points:\n",
        *markdown_table(["case", "N", "mean angle", "max angle"], sample_rows),
        "\n![circle](nearest_circle.png)\n\n![sphere](nearest_sphere.png)\n"]
  return "\n".join(md), js


# ---------------------------------------------------------------- part 3: depth

def settle_layer(series: list[int], target: int) -> str:
  """First layer (1-based) from which `series` equals `target` at every later layer."""
  equal = np.asarray(series) == target
  if not equal[-1]:
    return "never"
  trailing = len(equal) if equal.all() else int(np.argmin(equal[::-1]))
  return str(len(equal) - trailing + 1)


def lead_sentence(settled: list[tuple[str, str, str]]) -> str:
  """How often the eigenvalue count settles no later than the cluster count."""
  both = [(int(a), int(b)) for a, b, _ in settled if a != "never"]
  early = sum(a <= b for a, b in both)
  others = "; ".join(c for a, _, c in settled if a == "never") or "none"
  return (f"Of the {len(settled)} runs, {len(both)} end with as many eigenvalues of S near 1 "
          f"as clusters; in {early} of these the eigenvalue count reaches that number at or "
          "before the layer where the features do (S already separates the groups it will "
          "average to points). The others, #eig near 1 vs #clusters at the last layer: "
          f"{others}.\n")


def depth_section(cfg: dict, seed: int, out: str) -> tuple[str, dict]:
  data = {"gaussian": depth_lib.gaussian_data(cfg["depth_n"], DEPTH_DIM, seed),
          "6 blobs": depth_lib.blob_data(cfg["depth_n"], DEPTH_DIM, seed)}
  traces, rows, js, settled = {}, [], {}, []
  marks = [l for l in (1, 2, 4, 8, 16, 32, 48) if l <= cfg["depth"]]
  for name, x in data.items():
    traces[name] = []
    for scale in (None, 1.0):
      for kind in ("softmax", "l2", "metric"):
        tr = depth_lib.run_depth(x, kind, depth=cfg["depth"], seed=1000 * seed + 100,
                                 scale=scale)
        traces[name].append(tr)
        sc = "1/sqrt(d)" if scale is None else g(scale)
        settled.append((settle_layer(tr.near_one, tr.clusters[-1]),
                        settle_layer(tr.clusters, tr.clusters[-1]),
                        f"{name}/{kind}/{sc}: {tr.near_one[-1]} vs {tr.clusters[-1]}"))
        rows.append([name, kind, sc] + [f"{tr.rank[l - 1]}/{tr.clusters[l - 1]}/"
                                        f"{tr.near_one[l - 1]}" for l in marks]
                    + [g(tr.spread[-1], 2), settle_layer(tr.near_one, tr.clusters[-1]),
                       settle_layer(tr.clusters, tr.clusters[-1])])
        js[f"{name} | {kind} | {sc}"] = dict(rank=tr.rank, clusters=tr.clusters,
                                            spread=tr.spread, near_one=tr.near_one)
  figures.depth(traces, os.path.join(out, "depth.png"))
  md = [*markdown_table(["data", "kind", "scale"] + [f"layer {l}" for l in marks]
                        + [f"spread at layer {cfg['depth']}", "#eig near 1 = final #clusters "
                           "from layer", "#clusters = final #clusters from layer"], rows),
        "\nCells: rank / clusters / eigenvalues of S within 0.01 of 1 (S the matrix of that "
        "layer; rank and clusters of its output). The last two columns give the layer from "
        "which each count equals the final number of clusters and stays there (\"never\": "
        "not equal at the last layer). A spread of 0 means all features are equal in float32; "
        "spreads below about 1e-7 are float32 round-off.\n", lead_sentence(settled),
        "![depth](depth.png)\n"]
  return "\n".join(md), js


# ---------------------------------------------------------------- report

def header(cmd: str, seconds: float, cfg: dict, quick: bool) -> str:
  date = datetime.datetime.now().astimezone().strftime("%a %d %b %Y %H:%M:%S %Z")
  return "\n".join([
      "# Theory probes (issue 6): attention as a drift-diffusion step",
      "",
      f"- Command: `{cmd}`" + (" (quick mode: small N, not the committed grid)" if quick
                               else ""),
      f"- Machine: {machine_description()}",
      f"- Date: {date}; wall time {seconds:.0f} s",
      f"- Grid: N in {cfg['ns']}, eps = 2^-k for k in "
      f"{[int(round(-np.log2(e))) for e in cfg['epss']]}",
      "",
  ])


def headline(grids: list[GridResult], near_js: dict) -> str:
  """The main numbers of parts 1 and 2, from this run."""
  lines = ["## Headline numbers (this run)", ""]
  for res in grids:
    pairs = ", ".join(f"{n}: {g(e)}" for n, e in zip(res.ns, res.best_eps()))
    al, be = res.constants[0]
    lines.append(
        f"- {res.manifold}: best eps per N {{{pairs}}}; relative error at the best eps "
        f"{g(res.total[0].min())} (N = {res.ns[0]}) -> {g(res.total[-1].min())} "
        f"(N = {res.ns[-1]}); bias slope {res.bias_fit()[0]:.2f} in eps, variance slope "
        f"{res.variance_fit()[0]:.2f} in N eps^{res.rate:g}; at eps = {g(res.epss[0])} the "
        f"N = infinity estimate fits alpha = {al:.4f} (Laplacian), beta = {be:.4f} (drift).")
  for key, d in near_js.items():
    if key.endswith("eps=0.5") and "control" not in key:
      lines.append(
          f"- {key.split(' |')[0]}, eps = 0.5: the dot-product step lands "
          f"{d['dot_to_n']:.1f} deg from n(x) and {d['dot_to_x']:.1f} deg from x (x and n(x) "
          f"are {d['x_to_n']:.1f} deg apart), moving {d['dot_move']:.3f} on average; the "
          f"metric step stays {d['l2_to_x']:.1f} deg from x, moving {d['l2_move']:.3f}.")
  return "\n".join(lines) + "\n"


THEORY_NOTE = """\
**The constant.** With k(x, y) = exp(-||x - y||^2 / (2 eps)) the kernel is, in normal
coordinates around x, a Gaussian of variance eps per direction, so
int k(x, y) F(y) dV(y) = (2 pi eps)^(d/2) [F(x) + (eps/2)(Delta F(x) + E(x) F(x)) + O(eps^2)],
with E a curvature term (intrinsic and from the embedding, since ||x - y|| is the chord, not
the geodesic distance) that is the same for every F. The row-normalised operator is the
ratio of F = H p to F = p, so E cancels and
S H = H + (eps/2) (Delta(H p) - H Delta p) / p + O(eps^2)
    = H + (eps/2) [Delta H + 2 <grad log p, grad H>] + O(eps^2).
So the issue's formula holds as written: step eps/2, coefficient 1 on Laplace-Beltrami and 2
on the drift (this is Coifman & Lafon's alpha = 0 normalisation; with their kernel
exp(-||x - y||^2 / eps) the same operator appears with step eps/4). The numerical check
fits the N = infinity estimate (quadrature in float64, no sampling) as
alpha * Delta H + beta * <grad log p, grad H> over the test functions; alpha -> 1 and
beta -> 2 as eps -> 0, with an O(eps) deviation (the bias):
"""


def main(argv: list[str] | None = None, prog: str = "python -m metricattn.theory") -> None:
  args = parse_args(argv)
  cfg = QUICK if args.quick else FULL
  os.makedirs(args.out, exist_ok=True)
  cmd = " ".join([prog] + [shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)])
  t0 = time.time()
  print(f"[theory] convergence grid: N {cfg['ns']}, {len(cfg['epss'])} eps", flush=True)
  log = lambda s: print(s, flush=True)
  grids = [run_grid(m, cfg["ns"], cfg["epss"], seed=args.seed, block=args.block, log=log)
           for m in (Circle(), Sphere())]
  conv_md, conv_js = convergence_section(grids, args.out)
  print("[theory] nearest point", flush=True)
  near_md, near_js = nearest_section(cfg, args.seed, args.out)
  print("[theory] depth", flush=True)
  depth_md, depth_js = depth_section(cfg, args.seed, args.out)
  seconds = time.time() - t0
  text = "\n".join([
      header(cmd, seconds, cfg, args.quick), headline(grids, near_js),
      SUMMARY_1.format(block=args.block, n_sub=grids[0].n_sub), THEORY_NOTE,
      constants_section(grids), "", conv_md,
      SUMMARY_2, near_md, SUMMARY_3.format(n=cfg["depth_n"], dim=DEPTH_DIM), depth_md,
      NOT_DONE])
  with open(os.path.join(args.out, "report.md"), "w") as f:
    f.write(text)
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(dict(command=cmd, seconds=seconds, convergence=conv_js, nearest=near_js,
                   depth=depth_js), f, indent=1)
  print(f"[theory] wrote {args.out}/report.md in {seconds:.0f} s", flush=True)


SUMMARY_1 = """\
## 1. Operator convergence (Theorem 3)

N i.i.d. samples from p on the unit circle (p(theta) = (1 + 0.5 cos theta)/(2 pi); test
functions cos k theta, sin k theta, k = 1, 2, 3) and on the unit sphere S^2
(p = (1 + 0.5 z)/(4 pi); test functions the spherical harmonics z, x, xz, xy, 3z^2 - 1).
One attention step S H with the project's `l2_attention` (identity projections,
scale 1/(2 eps), float32 logits, {block} queries per block against all N keys), and the estimate
(S H - H)/(eps/2) at every sample point, against the analytic
L H = Laplace-Beltrami H + 2 <grad log p, grad H> (itself checked against finite differences of
p^-2 div(p^2 grad H) in the tests). Errors are relative Frobenius norms
||est - L H|| / ||L H|| over all sample points and test functions. The bias is the error of
the N = infinity estimate (the same ratio of kernel integrals by quadrature, float64) at the
first {n_sub} sample points; the variance part is ||est - est_inf|| / ||L H|| at those points.
Samples are nested (the sample of size N is the first N points of one seeded draw).
"""

SUMMARY_2 = """
## 2. What the dot product does instead (Theorems 5-6)

For f(x, y) = -x^T A y on the unit sphere, n(x) = argmin_{|y|=1} f(x, y) = A^T x / |A^T x|.
One dot-product attention step (`dot_product_attention`, queries A^T x, keys and values x,
scale 1/(2 eps), i.e. the kernel exp(-f/(2 eps))) against one metric step
(`l2_attention`, kernel exp(-||x - y||^2/(2 eps))) on samples from the densities of part 1.
Angles in degrees (mean over the samples) between the output S x and x, and between S x and
n(x); dist(S x, x) is the Euclidean displacement. eps = 0.5 is real attention (kernel
exp(-f)).
"""

SUMMARY_3 = """
## 3. Depth: clustering and rank collapse (Theorem 4)

H_{{l+1}} = S_l H_l through freshly initialised layers (`layers.Attention`, one head,
qk_features = d_mlp = {dim}, no value/output projection, no skip connection, layer l seeded
separately) of each kind, on {n} points in R^{dim}: standard Gaussian data, and 6 Gaussian blobs
(centres N(0, I), std 0.25). Two logit scales: the project default 1/sqrt(head_dim) and the
paper's Algorithm 1 (scale 1). Rank: singular values of H above 1e-3 of the largest.
Clusters: connected components of ||h_i - h_j|| < 0.05 r0 (r0 the initial RMS radius).
Spread: RMS radius over r0.
"""

NOT_DONE = """
## Trained IPNs

The second half of issue 6, section 3 (per layer, how far the attention of IPNs trained on the
Moon data is from a symmetric, metric kernel, and how their features cluster) is a separate
command, `python -m metricattn.theory trained`, with its own report:
[trained/report.md](trained/report.md).
"""
