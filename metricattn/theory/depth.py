"""Depth without skip connections: clustering and rank collapse (Theorem 4 and consequence).

H_{l+1} = S_l H_l with S_l the attention matrix of a freshly initialised layer of each kind
(the project's `layers.Attention`, one head, no value or output projection). Theorem 4: the
propagation is a heat flow whose stable states are constants, so the features cluster and
the rank collapses. Per layer we record, for the output features H_{l+1} [n, d]:

  rank      number of singular values of H above `rank_tol` times the largest
  clusters  connected components of the graph ||h_i - h_j|| < `cluster_tol` * r0,
            r0 the RMS distance of the input features to their mean
  spread    RMS distance to the mean, over r0
  near_one  eigenvalues of S_l within `eig_tol` of 1, i.e. near-zero eigenvalues of S_l - I

A row-stochastic S has the eigenvalue 1 once per closed group of tokens that do not attend
outside the group; nearly closed groups give eigenvalues near 1, and S averages each group to
one point: `near_one` counts the clusters the layer is forming.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from flax import nnx
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import pdist, squareform

from metricattn.attention import Attention


def gaussian_data(n: int, dim: int, seed: int) -> np.ndarray:
  """n points from N(0, I_dim), [n, dim] float32."""
  return np.random.default_rng([seed, 3]).normal(size=(n, dim)).astype(np.float32)


def blob_data(n: int, dim: int, seed: int, blobs: int = 6, width: float = 0.25) -> np.ndarray:
  """n points from `blobs` Gaussian blobs (centres N(0, I), std `width`), [n, dim] float32."""
  rng = np.random.default_rng([seed, 4])
  centres = rng.normal(size=(blobs, dim))
  x = centres[np.arange(n) % blobs] + width * rng.normal(size=(n, dim))
  return x.astype(np.float32)


def attention_matrix(layer: Attention, h: jax.Array) -> jax.Array:
  """The one-head attention matrix S of `layer` on h [1, n, d], [n, n] float32."""
  logits = layer.logits(layer.queries(h), layer.keys(h))
  return jax.nn.softmax(logits, axis=-1)[0, 0]


@dataclasses.dataclass
class DepthTrace:
  """Per-layer statistics of one run; every list has one entry per layer."""
  kind: str
  scale: float | None
  rank: list[int]
  clusters: list[int]
  spread: list[float]
  near_one: list[int]
  singular: list[np.ndarray]     # singular values of H_{l+1}, over the largest


def cluster_labels(h: np.ndarray, radius: float) -> np.ndarray:
  """Component index [n] of each row of h in the graph ||h_i - h_j|| < radius."""
  adj = squareform(pdist(h)) < radius
  return connected_components(adj, directed=False)[1]


def feature_stats(h: np.ndarray, r0: float, rank_tol: float, cluster_tol: float):
  """(rank, clusters, spread, normalised singular values) of features h [n, d]."""
  sv = np.linalg.svd(h, compute_uv=False)
  rank = int(np.sum(sv > rank_tol * sv[0]))
  clusters = int(cluster_labels(h, cluster_tol * r0).max() + 1)
  spread = float(np.sqrt(np.mean(np.sum((h - h.mean(0)) ** 2, axis=1))) / r0)
  return rank, clusters, spread, sv / sv[0]


def run_depth(x: np.ndarray, kind: str, *, depth: int, seed: int, scale: float | None,
              qk_features: int | None = None, d_mlp: int | None = None,
              rank_tol: float = 1e-3, cluster_tol: float = 0.05,
              eig_tol: float = 1e-2) -> DepthTrace:
  """Propagates x [n, d] through `depth` random layers of one kind; see the module docstring.

  Layer l is initialised with `nnx.Rngs(seed + l)`; qk_features and d_mlp default to d.
  """
  d = x.shape[1]
  h = jax.numpy.asarray(x)[None]
  x64 = np.asarray(x, np.float64)
  r0 = float(np.sqrt(np.mean(np.sum((x64 - x64.mean(0)) ** 2, axis=1))))
  trace = DepthTrace(kind, scale, [], [], [], [], [])
  for layer_idx in range(depth):
    layer = Attention(d, kind=kind, num_heads=1, qk_features=qk_features or d,
                      d_mlp=d_mlp or d, scale=scale, rngs=nnx.Rngs(seed + layer_idx))
    s = np.asarray(attention_matrix(layer, h), np.float64)
    trace.near_one.append(int(np.sum(np.abs(1.0 - np.linalg.eigvals(s)) < eig_tol)))
    h = layer(h)
    rank, clusters, spread, sv = feature_stats(np.asarray(h[0], np.float64), r0, rank_tol,
                                               cluster_tol)
    trace.rank.append(rank)
    trace.clusters.append(clusters)
    trace.spread.append(spread)
    trace.singular.append(sv)
  return trace
