"""Trained Moon IPNs (issue 6, section 3, second half): per layer, how far the learned
attention is from a symmetric (metric) kernel, and how the features cluster.

  python -m metricattn.theory trained [--runs ROOT] [--budget quick] \
      [--out results/theory/trained]

The runs are those of the `moons` experiment (`metricattn.registry`, `configs/moons_ipn.py`)
in ROOT/attention=KIND/seed=S, every seed of the budget for the three kinds (default
`quick`: 2,000 steps, the config's default; the experiment's fourth group, l2_lipschitz,
is trained with them but not analysed here). This module holds the measures and the
analysis of one run; `metricattn.theory.trained_report` is the command and its report text,
and says which `metricattn.experiment` command makes missing runs.

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

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from metricattn import attention as attn_lib
from metricattn import registry
from metricattn import runs as runs_lib
from metricattn.errors import UserError
from metricattn.fileio import read_json
from metricattn.restore import restore
from metricattn.theory import depth as depth_lib

EXPERIMENT = "moons"
RANK_TOL, CLUSTER_TOL, EIG_TOL = 1e-3, 0.05, 1e-2


# ---------------------------------------------------------------- the runs

def workdirs(root: Path, budget: str) -> dict[tuple[str, int], Path]:
  """{(kind, seed): workdir} of the moons experiment's runs in root."""
  exp = registry.get(EXPERIMENT)
  return {(k, s): runs_lib.seed_dir(runs_lib.point_dir(root, {"attention": k}), s)
          for k in exp.kinds if k in attn_lib.KINDS for s in range(exp.budget(budget).seeds)}


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
  return np.asarray(attn.logits(attn.queries(x), attn.keys(x))[0], np.float64)


def softmax_param_asym(attn) -> float | None:
  """||A(M_h)|| / ||M_h|| pooled over heads, M_h = W_Q,h W_K,h^T (dot logits only)."""
  if attn.distance:
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
  config, data, _, graphdef, params, _ = restore(workdir)
  init = build(config)[3]
  run_acc = (read_json(Path(workdir) / "summary.json") or {}).get("test/accuracy")
  return [analyse(config, graphdef, init, data, "init", None),
          analyse(config, graphdef, params, data, "trained", run_acc)]


def layer_matrices(workdir: Path) -> dict:
  """For the figure: per layer S and A(C) of the trained run, the set order, final H."""
  _, data, _, graphdef, params, _ = restore(workdir)
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


