"""Trained Moon IPNs (issue 6, section 3, second half): per layer, how far the learned
attention is from a symmetric (metric) kernel, and how the features cluster.

  python -m metricattn.theory trained [--runs ROOT] [--budget quick] \
      [--out results/theory/trained]

The runs are those of the `moons` experiment (`metricattn.registry`, `configs/moons_ipn.py`)
in ROOT/attention=KIND/seed=S, every seed of the budget for the three kinds (default
`quick`: 2,000 steps, the config's default; the experiment's fourth group, l2_lipschitz,
is trained with them but not analysed here). When any is missing, the experiment runner
(`metricattn.experiment`, without its robustness step) trains them first; finished runs are
reused, interrupted ones resume.

The analysis set is the run's 100 test points plus its 100 context points (the fixed
training subset its evaluation attends to), presented as ONE set without a mask, as in
training (where 100 training points attend to each other): every matrix below is a full,
strictly positive [200, 200] matrix. The same analysis is run on the initial
parameters of each run, for comparison.

Asymmetry. S = softmax_j(L_ij) is unchanged by row offsets L_ij + a_i, so the "kernel"
exp(L) of an attention matrix is defined only up to a positive factor per row (the project's
l2 logits, for instance, are the bias form s (2 q.k - |k|^2), not -s |q - k|^2: the raw
exp(L) of an l2 layer is not symmetric, though its S is a normalised symmetric kernel).
A per-key bias (column offset c_j) does not make a kernel less symmetric either. With
J = I - 11^T/n, the doubly centred logits C = J L J remove both and are the same for every
logit form that gives the same S. We report
  asym = ||A||_F / ||C||_F,  A = (C - C^T)/2,
in [0, 1] (||C||^2 = ||A||^2 + ||(C + C^T)/2||^2). asym = 0 iff L_ij + a_i is symmetric
for some a, i.e. S = D^-1 K with K = K^T (S is reversible: pi_i S_ij = pi_j S_ji). A is the
antisymmetric part of L minus its best "gradient" a_i - a_j (the Hodge residual). For
softmax, q = W_Q^T h + b_Q and k = W_K^T h + b_K give C = s H_c M H_c^T with M = W_Q W_K^T
and H_c the centred features, so asym is the antisymmetric part of M seen through the data;
`param_asym` is ||A(M)||_F / ||M||_F itself.

Metric-ness. Symmetric is not yet metric. For symmetric C, -C/s is, up to row and column
offsets, a squared Euclidean distance between the points iff C is positive semidefinite
(Schoenberg; classical MDS). `neg` = sum of |negative eigenvalues| / sum of |eigenvalues| of
(C + C^T)/2. l2 and metric attention give C = 2 s G_c G_c^T (G the projected, for metric
g-mapped, features): asym = neg = 0 by construction, up to float32 rounding of the logits,
a sanity check. Both zero means S is exactly a row-normalised exp(-s ||phi_i - phi_j||^2).

Clustering (the statistics of `depth.py`, on the features H_l after layer l; H_0 is the
embedding): rank (singular values above 1e-3 of the largest), clusters (components of
||h_i - h_j|| < 0.05 r0, r0 the RMS radius of H_0), `mixed` (clusters holding both classes),
spread, and the eigenvalues of the layer's S within 0.01 of 1 and its second largest
|eigenvalue| lambda2. The IPN has no value projection, so rank(H_l) <= rank(H_0) <= 3 (an
affine image of the 2-D input).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from metricattn import attention as attn_lib
from metricattn import registry
from metricattn import runs as runs_lib
from metricattn.errors import UserError
from metricattn.reporting import machine_description, markdown_table
from metricattn.theory import depth as depth_lib

EXPERIMENT = "moons"
RANK_TOL, CLUSTER_TOL, EIG_TOL = 1e-3, 0.05, 1e-2


# ---------------------------------------------------------------- the runs

def workdirs(root: Path, budget: str) -> dict[tuple[str, int], Path]:
  """{(kind, seed): workdir} of the moons experiment's runs in root."""
  exp = registry.get(EXPERIMENT)
  return {(k, s): root / f"attention={k}" / f"seed={s}"
          for k in exp.kinds if k in attn_lib.KINDS for s in range(exp.budget(budget).seeds)}


def experiment_command(root: Path, budget: str) -> str:
  return shlex.join(["python", "-m", "metricattn.experiment", EXPERIMENT, "--budget", budget,
                     "--root", str(root), "--no-robustness"])


def ensure_runs(root: Path, budget: str) -> tuple[dict[tuple[str, int], Path], float, int]:
  """(workdirs, seconds, runs trained now): the experiment runner trains the missing runs
  (it refuses a root that holds another budget); a finished root is used as it is."""
  from metricattn import experiment
  runs = workdirs(root, budget)
  missing = [w for w in runs.values() if not runs_lib.finished(w)]
  recorded = (runs_lib.read_json(root / "experiment.json") or {}).get("budget")
  t0 = time.time()
  if missing or recorded != budget:
    experiment.run(EXPERIMENT, budget, root, None, None, experiment_command(root, budget),
                   robust=False)
  return runs, time.time() - t0, len(missing)


# ---------------------------------------------------------------- measures

def centred(logits: np.ndarray) -> np.ndarray:
  """J L J over the last two axes: logits without row and column offsets."""
  c = logits - logits.mean(axis=-1, keepdims=True)
  return c - c.mean(axis=-2, keepdims=True)


def asymmetry(logits: np.ndarray) -> float:
  """||A(C)||_F / ||C||_F, C = J L J, A the antisymmetric part; heads [h, n, n] pooled."""
  return matrix_asymmetry(centred(np.asarray(logits, np.float64)))


def negative_mass(logits: np.ndarray) -> float:
  """Sum of |negative eigenvalues| over sum of |eigenvalues| of sym(J L J); heads pooled."""
  c = centred(np.asarray(logits, np.float64))
  eig = np.linalg.eigvalsh(0.5 * (c + np.swapaxes(c, -1, -2)))
  return float(np.sum(np.abs(eig[eig < 0])) / np.sum(np.abs(eig)))


def matrix_asymmetry(m: np.ndarray) -> float:
  """||A(M)||_F / ||M||_F of a square matrix (or a stack of them, pooled)."""
  anti = 0.5 * (m - np.swapaxes(m, -1, -2))
  return float(np.sqrt(np.sum(anti ** 2) / np.sum(m ** 2)))


def row_softmax(logits: np.ndarray) -> np.ndarray:
  z = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return z / z.sum(axis=-1, keepdims=True)


def spectrum(s: np.ndarray, y: np.ndarray) -> tuple[int, float, float]:
  """Of S [n, n]: (eigenvalues within EIG_TOL of 1, second largest |eigenvalue| lambda2,
  agreement of the sign split of lambda2's right eigenvector (real part) with the labels y)."""
  eig, vec = np.linalg.eig(s)
  i2 = np.argsort(-np.abs(eig))[1]
  agree = float(np.mean((vec[:, i2].real > 0) == (y == y.max())))
  return (int(np.sum(np.abs(1.0 - eig) < EIG_TOL)), float(np.abs(eig[i2])),
          max(agree, 1.0 - agree))


def same_class_weight(s: np.ndarray, y: np.ndarray) -> float:
  """Mean over rows of the attention weight S puts on points of the row's own class."""
  return float(np.mean(np.sum(s * (y[:, None] == y[None, :]), axis=1)))


# ---------------------------------------------------------------- one layer, one run

@dataclasses.dataclass
class LayerStats:
  """One layer of one run; layer 0 is the embedding H_0 (attention fields are None)."""
  layer: int
  rank: int
  clusters: int
  mixed: int
  spread: float
  sv: list[float]                     # singular values of H_l over the largest (first 4)
  asym: float | None = None
  neg: float | None = None
  param_asym: float | None = None     # softmax only: ||A(W_Q W_K^T)|| / ||W_Q W_K^T||
  in_aniso: float | None = None       # sigma_2 / sigma_1 of the centred input of the layer
  near_one: int | None = None
  lambda2: float | None = None
  split: float | None = None          # class agreement of the sign of lambda2's eigenvector
  same_class: float | None = None     # mean attention weight on the row's own class
  prop_err: float | None = None       # max |S H_{l-1} - H_l| / max |H_l| (plain blocks)


@dataclasses.dataclass
class RunAnalysis:
  kind: str
  seed: int
  state: str                          # "trained" or "init"
  set_accuracy: float                 # on the 100 test points of the 200-point set
  run_accuracy: float | None          # the run's own test accuracy (train_context mode)
  layers: list[LayerStats]


def analysis_set(data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(x [200, 2], y, is_test): the run's context points, then its test points."""
  if data.context is None:
    raise UserError("the analysis needs eval.mode=train_context (a context set)")
  (cx, cy), (tx, ty) = data.context, data.splits["test"]
  is_test = np.r_[np.zeros(len(cx), bool), np.ones(len(tx), bool)]
  return np.concatenate([cx, tx]), np.concatenate([cy, ty]), is_test


def layer_logits(attn, x: jax.Array) -> np.ndarray:
  """The project's float32 logits of `attn` on x [1, n, d], as float64 [heads, n, n]."""
  q, k = attn.queries(x), attn.keys(x)
  fn = attn_lib.dot_product_logits if attn.kind == "softmax" else attn_lib.l2_logits
  return np.asarray(fn(q, k, scale=attn.scale)[0], np.float64)


def softmax_param_asym(attn) -> float | None:
  """||A(M_h)|| / ||M_h|| pooled over heads, M_h = W_Q,h W_K,h^T (softmax kind only)."""
  if attn.kind != "softmax":
    return None
  wq, wk = (np.asarray(p.kernel[...], np.float64) for p in (attn.q_proj, attn.k_proj))
  heads = np.split(wq, attn.num_heads, axis=1), np.split(wk, attn.num_heads, axis=1)
  return matrix_asymmetry(np.stack([a @ b.T for a, b in zip(*heads)]))


def centred_anisotropy(h: np.ndarray) -> float:
  """sigma_2 / sigma_1 of the centred features h [n, d]."""
  sv = np.linalg.svd(h - h.mean(0), compute_uv=False)
  return float(sv[1] / sv[0])


def feature_layer(layer: int, h: np.ndarray, y: np.ndarray, r0: float) -> LayerStats:
  rank, clusters, spread, sv = depth_lib.feature_stats(h, r0, RANK_TOL, CLUSTER_TOL)
  labels = depth_lib.cluster_labels(h, CLUSTER_TOL * r0)
  mixed = sum(len(np.unique(y[labels == c])) > 1 for c in range(clusters))
  return LayerStats(layer, rank, clusters, int(mixed), spread, [float(v) for v in sv[:4]])


def plain(block) -> bool:
  """H_new = S H_old exactly: no residual, layer norm or value/output projection."""
  a = block.attn
  return (not block.residual and block.norm is None and a.v_proj is None
          and a.out_proj is None and a.value_map == "linear")


def analyse_model(model, x: np.ndarray, y: np.ndarray) -> tuple[list[LayerStats], np.ndarray]:
  """Per-layer statistics of an IPN on the set x [n, 2] (no mask); also its logits [n, C]."""
  h = model.embed(jnp.asarray(x))[None]
  h64 = np.asarray(h[0], np.float64)
  r0 = float(np.sqrt(np.mean(np.sum((h64 - h64.mean(0)) ** 2, axis=1))))
  stats = [feature_layer(0, h64, y, r0)]
  for i, block in enumerate(model.blocks):
    inp = block.norm(h) if block.norm is not None else h
    logits = layer_logits(block.attn, inp)
    s = row_softmax(logits).mean(axis=0)    # heads averaged, as the block does without v_proj
    h_new = block(h, None)
    out = np.asarray(h_new[0], np.float64)
    st = feature_layer(i + 1, out, y, r0)
    st.asym, st.neg = asymmetry(logits), negative_mass(logits)
    st.param_asym = softmax_param_asym(block.attn)
    st.in_aniso = centred_anisotropy(np.asarray(inp[0], np.float64))
    st.near_one, st.lambda2, st.split = spectrum(s, y)
    st.same_class = same_class_weight(s, y)
    if plain(block):
      st.prop_err = float(np.abs(s @ np.asarray(h[0], np.float64) - out).max()
                          / np.abs(out).max())
    stats.append(st)
    h = h_new
  return stats, np.asarray(model.head(h[0]))


def analyse(config, graphdef, params, data, state: str,
            run_accuracy: float | None) -> RunAnalysis:
  x, y, is_test = analysis_set(data)
  layers, logits = analyse_model(nnx.merge(graphdef, params), x, y)
  acc = float(np.mean(np.argmax(logits[is_test], -1) == y[is_test]))
  return RunAnalysis(config.model.attention, int(config.seed), state, acc, run_accuracy,
                     layers)


def analyse_workdir(workdir: Path) -> list[RunAnalysis]:
  """[initial, trained] analyses of a run's latest checkpoint."""
  from metricattn.train import build
  config, data, _, graphdef, params, _ = runs_lib.restore(workdir)
  init = build(config)[3]
  run_acc = (runs_lib.read_json(Path(workdir) / "summary.json") or {}).get("test/accuracy")
  return [analyse(config, graphdef, init, data, "init", None),
          analyse(config, graphdef, params, data, "trained", run_acc)]


def layer_matrices(workdir: Path) -> dict:
  """For the figure: per layer S and A(C) of the trained run, the set order, final H."""
  _, data, _, graphdef, params, _ = runs_lib.restore(workdir)
  model = nnx.merge(graphdef, params)
  x, y, is_test = analysis_set(data)
  h = model.embed(jnp.asarray(x))[None]
  mats = []
  for block in model.blocks:
    inp = block.norm(h) if block.norm is not None else h
    logits = layer_logits(block.attn, inp)
    c = centred(logits)
    mats.append((row_softmax(logits).mean(0), 0.5 * (c - np.swapaxes(c, -1, -2)).mean(0)))
    h = block(h, None)
  return dict(x=x, y=y, is_test=is_test, mats=mats, h=np.asarray(h[0], np.float64))


# ---------------------------------------------------------------- report

def parse_args(argv: list[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m metricattn.theory trained",
                              description="Per-layer asymmetry and clustering of trained "
                              "Moon IPNs (issue 6, section 3).")
  p.add_argument("--runs", type=Path, default=None, metavar="ROOT",
                 help=f"root of the {EXPERIMENT} experiment's runs, trained there when "
                 f"missing (default runs/experiments/{EXPERIMENT}/BUDGET)")
  p.add_argument("--budget", default="quick",
                 help=f"budget of the {EXPERIMENT} experiment: "
                 f"{', '.join(registry.get(EXPERIMENT).budgets)} (quick: 2,000 steps)")
  p.add_argument("--out", default="results/theory/trained",
                 help="output directory (report.md, results.json, PNGs)")
  return p.parse_args(argv)


def g(v: float | None, digits: int = 3) -> str:
  return "-" if v is None else f"{v:.{digits}g}"


def mean_range(vals: list[float | None], digits: int = 3) -> str:
  vals = [v for v in vals if v is not None]
  if not vals:
    return "-"
  return f"{g(np.mean(vals), digits)} [{g(min(vals), 2)}, {g(max(vals), 2)}]"


def per_seed(vals: list) -> str:
  return " ".join(str(v) for v in vals)


def group(results: list[RunAnalysis], kind: str, state: str) -> list[RunAnalysis]:
  return [r for r in results if r.kind == kind and r.state == state]


def column(runs: list[RunAnalysis], layer: int, field: str) -> list:
  return [getattr(r.layers[layer], field) for r in runs]


def asymmetry_table(results: list[RunAnalysis], kinds: list[str]) -> str:
  rows = []
  for kind in kinds:
    init, done = group(results, kind, "init"), group(results, kind, "trained")
    for layer in range(1, len(done[0].layers)):
      rows.append([kind, layer] + [mean_range(column(runs, layer, f))
                                   for f in ("asym", "neg", "param_asym")
                                   for runs in (init, done)]
                  + [mean_range(column(done, layer, "in_aniso"), 2)])
  return "\n".join(markdown_table(
      ["kind", "layer", "asym, init", "asym, trained", "neg, init", "neg, trained",
       "param asym, init", "param asym, trained", "input sigma2/sigma1 (centred), trained"],
      rows))


def softmax_sentence(results: list[RunAnalysis]) -> str:
  """Trained softmax layers whose symmetric logit part is mostly negative, and where they
  send their attention."""
  layers = [l for r in results if r.kind == "softmax" and r.state == "trained"
            for l in r.layers[1:]]
  if not layers:
    return ""
  anti = [l for l in layers if l.neg > 0.5]
  rest = [l for l in layers if l.neg <= 0.5]
  mean = lambda ls: g(np.mean([l.same_class for l in ls]), 2) if ls else "-"
  return (f"Trained softmax layers: in {len(anti)} of {len(layers)} (run, layer) pairs the "
          "symmetric part of C is mostly negative (neg > 0.5; at neg = 1, C = -G G^T and the "
          "logits grow with ||g_i - g_j||^2: a point attends to points far from it in that "
          "embedding, which the dot product's nearest-point map of section 2 of the theory "
          f"report allows). Their mean same-class weight is {mean(anti)}, against "
          f"{mean(rest)} in the other softmax layers.\n")


def cluster_table(results: list[RunAnalysis], kinds: list[str]) -> str:
  rows = []
  for kind in kinds:
    for state in ("init", "trained"):
      runs = group(results, kind, state)
      for layer in range(len(runs[0].layers)):
        clusters = [f"{c}({m})" for c, m in zip(column(runs, layer, "clusters"),
                                                column(runs, layer, "mixed"))]
        near = column(runs, layer, "near_one")
        rows.append([kind, state, layer, per_seed(column(runs, layer, "rank")),
                     per_seed(clusters), per_seed(near) if layer else "-",
                     mean_range(column(runs, layer, "lambda2"), 2),
                     mean_range(column(runs, layer, "split"), 2),
                     mean_range(column(runs, layer, "same_class"), 2),
                     mean_range([sv[1] for sv in column(runs, layer, "sv")], 2),
                     mean_range(column(runs, layer, "spread"), 2)])
  return "\n".join(markdown_table(
      ["kind", "params", "layer", "rank", "clusters (mixed)", "#eig(S) near 1", "lambda2",
       "split vs class", "same-class weight", "sigma2/sigma1", "spread"], rows))


def accuracy_table(results: list[RunAnalysis], kinds: list[str]) -> str:
  rows = []
  for kind in kinds:
    done, init = group(results, kind, "trained"), group(results, kind, "init")
    rows.append([kind, mean_range([r.run_accuracy for r in done]),
                 per_seed([g(r.run_accuracy) for r in done]),
                 mean_range([r.set_accuracy for r in done]),
                 mean_range([r.set_accuracy for r in init])])
  return "\n".join(markdown_table(
      ["kind", "run test accuracy (train_context)", "per seed",
       "test accuracy in the 200-point set", "same, initial params"], rows))


def eig_sentence(results: list[RunAnalysis]) -> str:
  """How often #eig(S) near 1 equals the number of clusters the layer forms."""
  pairs = [(l.near_one, l.clusters) for r in results if r.state == "trained"
           for l in r.layers if l.near_one is not None]
  equal = sum(a == b for a, b in pairs)
  fewer = sum(a < b for a, b in pairs)
  return (f"Trained layers: in {equal} of {len(pairs)} (run, layer) pairs the number of "
          f"eigenvalues of S within {EIG_TOL} of 1 equals the number of clusters of the "
          f"layer's output, in {fewer} it is smaller, in {len(pairs) - equal - fewer} "
          "larger. With two trained layers the features contract only partly (see the spread), "
          "so the cluster count at a fixed radius counts partly contracted groups; lambda2 "
          "and the split column say more about the groups S is forming.")


def headline(results: list[RunAnalysis], kinds: list[str]) -> str:
  lines = ["## Headline numbers (this run)", ""]
  last = len(results[0].layers) - 1
  per_layer = lambda runs, f, d=3: ", ".join(
      f"layer {l}: {mean_range(column(runs, l, f), d)}" for l in range(1, last + 1))
  for kind in kinds:
    done, init = group(results, kind, "trained"), group(results, kind, "init")
    lines.append(
        f"- **{kind}**: test accuracy {mean_range([r.run_accuracy for r in done])}. "
        f"Asymmetry trained {per_layer(done, 'asym')} (initial {per_layer(init, 'asym')}); "
        f"negative mass trained {per_layer(done, 'neg')}. Same-class attention weight "
        f"{per_layer(done, 'same_class', 2)}; lambda2 {per_layer(done, 'lambda2', 2)}. "
        f"After layer {last}: clusters per seed {per_seed(column(done, last, 'clusters'))} "
        f"(mixed {per_seed(column(done, last, 'mixed'))}), #eig(S) near 1 "
        f"{per_seed(column(done, last, 'near_one'))}, rank "
        f"{per_seed(column(done, last, 'rank'))}.")
  errs = [l.prop_err for r in results for l in r.layers if l.prop_err is not None]
  if errs:
    lines.append(f"- Check: the matrix S analysed reproduces every block's output, "
                 f"max |S H_(l-1) - H_l| / max |H_l| = {g(max(errs), 2)}.")
  return "\n".join(lines) + "\n"


def header(cmd: str, seconds: float, train_seconds: float, trained: int, reused: int,
           root: Path, budget: str) -> str:
  exp = registry.get(EXPERIMENT)
  date = datetime.datetime.now().astimezone().strftime("%a %d %b %Y %H:%M:%S %Z")
  return "\n".join([
      "# Trained Moon IPNs: how far the learned attention is from a metric kernel, and its "
      "clustering (issue 6, section 3)", "",
      f"- Command: `{cmd}`",
      f"- Machine: {machine_description()}",
      f"- Date: {date}; wall time {seconds:.0f} s ({trained} runs trained here in "
      f"{train_seconds:.0f} s, {reused} reused)",
      f"- Runs: the `{EXPERIMENT}` experiment, budget `{budget}` ({exp.budget(budget).note}), "
      f"in `{root}` (`{experiment_command(root, budget)}` trains them): "
      f"`{exp.config_arg(budget)}` (paper Table 2 settings: IPN width 16, depth 2, one head, "
      "d_Q = d_mlp = 10, scale 1/sqrt(d_Q), no skip; the seed also draws the data set)", ""])


METHOD = f"""\
## Method

Each run is analysed on one set of 200 points: its 100 test points and its 100 context points
(the training subset its evaluation attends to), as one set without a mask, all points
attending to each other as the 100 training points of a set do in training. Layer l maps
H_(l-1) to H_l = S_l H_(l-1) (H_0 the embedding). "init" is the same analysis with the run's
initial parameters.

- **asym** = ||A||_F / ||C||_F with C = J L J the logits of the layer (the project's float32
  logits on all 200 x 200 pairs) with row and column offsets removed (J = I - 11^T/n) and
  A = (C - C^T)/2. Softmax ignores row offsets and a per-key bias is not an asymmetry, so
  only C is meaningful (the raw exp(L) of an l2 layer is not symmetric: its logits are the
  bias form s (2 q.k - |k|^2)). asym = 0 iff S = D^-1 K with K symmetric, i.e. S is a
  reversible Markov matrix (pi_i S_ij = pi_j S_ji); asym is in [0, 1]. l2 and metric
  attention are symmetric by construction, so their values measure float32 rounding only.
- **neg** = sum |negative eigenvalues| / sum |eigenvalues| of (C + C^T)/2. A symmetric C is,
  up to offsets, -s times squared Euclidean distances between embedded points iff it is
  positive semidefinite (Schoenberg; classical MDS). asym = neg = 0 means S is exactly a
  row-normalised exp(-s ||phi(x_i) - phi(x_j)||^2): a metric kernel on these points.
- **param asym** (softmax): ||A(M)|| / ||M|| for M = W_Q W_K^T; C = s H_c M H_c^T, so asym is
  this antisymmetry seen through the centred features H_c.
- Clustering as in section 3 of the theory report: rank = singular values of H_l above
  {RANK_TOL} of the largest; clusters = components of ||h_i - h_j|| < {CLUSTER_TOL} r0 (r0 the
  RMS radius of H_0), (mixed) = how many of them hold both classes; #eig(S) near 1 =
  eigenvalues of S_l within {EIG_TOL} of 1 (S_l is strictly positive, so the eigenvalue 1
  itself is simple); lambda2 = second largest |eigenvalue| of S_l (near 1: S_l nearly splits
  the set into two closed groups); split vs class = agreement of the sign of lambda2's right
  eigenvector (real part) with the classes, 0.5 to 1; same-class weight = mean over points
  of the attention weight on points of their own class (0.5 for class-blind attention);
  sigma2/sigma1 = second singular value of H_l over the first; spread = RMS radius over r0.
  Without a value projection rank(H_l) <= rank(H_0) <= 3 (an affine image of the 2-D
  input; 2 at initialisation, where the embedding bias is 0).

Cells "a [b, c]" are the mean and range over seeds; space-separated cells list the seeds in
order.
"""


FIGURE_NOTE = """\
First figure: one line per run, solid trained, dashed initial parameters. Second figure (first
seed): rows and columns sorted by class, then by the first input coordinate; S in log colours;
A(C) the antisymmetric part of the centred logits of layer 1 (for l2 and metric, float32
rounding); right, the features after the last layer on their first two principal components
(filled: context points, open: test points).
"""

ANISO_NOTE = """\
The input of every layer is an affine image of the 2-D data, so its centred features H_c have
rank 2: with H_c = U diag(s1, s2) V^T and N = V^T M V (2 x 2), the antisymmetric part of
C = s H_c M H_c^T is s s1 s2 A(N), the symmetric part up to s s1^2 sym(N). A softmax layer's
asym therefore shrinks with the centred s2/s1 of its input (last column), whatever M is: a
layer fed nearly one-dimensional features cannot be far from symmetric.
"""


def write_report(out: Path, text: str, results: list[RunAnalysis], meta: dict) -> None:
  runs_lib.write_atomic(out / "report.md", text)
  js = dict(meta, runs=[dataclasses.asdict(r) for r in results])
  runs_lib.write_atomic(out / "results.json", json.dumps(js, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
  from metricattn.cli import enable_compilation_cache, run
  args = parse_args(argv)
  cmd = " ".join(["python -m metricattn.theory trained"]
                 + [shlex.quote(a) for a in (sys.argv[2:] if argv is None else argv)])
  enable_compilation_cache()
  run(report, args.runs or Path("runs/experiments") / EXPERIMENT / args.budget, args.budget,
      Path(args.out), cmd)


def report(root: Path, budget: str, out: Path, cmd: str) -> None:
  """Trains the missing runs, analyses them all and writes OUT/report.md."""
  from metricattn.theory import figures
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  runs, train_s, n_new = ensure_runs(root, budget)
  kinds = list(dict.fromkeys(k for k, _ in runs))
  seeds = sorted({s for _, s in runs})
  print(f"[trained] analysing {len(runs)} runs", flush=True)
  results = [r for w in runs.values() for r in analyse_workdir(w)]
  figures.trained_stats(results, str(out / "trained.png"))
  mats = {k: layer_matrices(runs[k, seeds[0]]) for k in kinds}
  figures.trained_matrices(mats, str(out / "trained_attention.png"),
                           f"trained IPNs, seed {seeds[0]}: 200-point analysis set")
  seconds = time.time() - t0
  text = "\n".join([
      header(cmd, seconds, train_s, n_new, len(runs) - n_new, root, budget),
      headline(results, kinds), METHOD,
      "## Accuracy\n", accuracy_table(results, kinds), "",
      "The analysis set differs from the run's evaluation only in that test points also see "
      "each other; the accuracies show how far that changes the predictions.\n",
      "## Asymmetry and metric-ness per layer\n", asymmetry_table(results, kinds), "",
      ANISO_NOTE, softmax_sentence(results),
      "## Clustering per layer\n", cluster_table(results, kinds), "", eig_sentence(results),
      "", "![per-layer statistics](trained.png)\n",
      f"![attention matrices, seed {seeds[0]}](trained_attention.png)\n",
      FIGURE_NOTE])
  write_report(out, text, results, dict(
      command=cmd, seconds=seconds, experiment=EXPERIMENT, budget=budget, root=str(root),
      seeds=seeds, kinds=kinds, workdirs={f"{k}/{s}": str(w) for (k, s), w in runs.items()}))
  print(f"[trained] wrote {out}/report.md in {seconds:.0f} s", flush=True)
