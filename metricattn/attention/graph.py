"""Graph-masked attention: dense (a boolean adjacency mask) and sparse (an edge list).

An edge list is two int32 arrays [edges]: edge e lets node `receivers[e]` attend to node
`senders[e]`. Self-loops count only when listed as edges.

  sparse  graph_attention(q, k, v, receivers, senders, distance=...)   memory O(edges)
  dense   dot_product_attention / l2_attention(..., mask=adjacency_mask(...)[None, None])

The two agree (tests/test_graph_attention.py). The sparse kernel computes one logit per edge
and the row softmax over each receiver's incoming edges with segment reductions, so no
[nodes, nodes] array exists anywhere; the dense path is fine up to a few thousand nodes.

All three attention kinds need only two logits: `softmax` uses dot logits; `l2` and `metric`
use distance logits (metric is l2 on g-transformed queries and keys, applied by the caller).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from metricattn.attention.kernels import _default_scale
from metricattn.errors import UserError

Array = jax.Array


def _check_ids(ids, num_nodes: int, name: str) -> None:
  """Eager range check of node ids; skipped for tracers so that jit still works."""
  if isinstance(ids, jax.core.Tracer):
    return
  ids = np.asarray(ids)
  bad = ids[(ids < 0) | (ids >= num_nodes)]
  if bad.size:
    raise UserError(f"graph attention: {name} node id {int(bad[0])} is out of range for "
                    f"{num_nodes} nodes (allowed 0..{num_nodes - 1})")


def adjacency_mask(receivers: Array, senders: Array, num_nodes: int) -> Array:
  """bool [num_nodes, num_nodes] with mask[r, s] True for each edge (r, s).

  For the dense kernels' `mask` argument: `mask=adjacency_mask(r, s, n)[None, None]`.
  """
  _check_ids(receivers, num_nodes, "receiver")
  _check_ids(senders, num_nodes, "sender")
  return jnp.zeros((num_nodes, num_nodes), bool).at[receivers, senders].set(True)


def graph_attention(q: Array, k: Array, v: Array, receivers: Array, senders: Array, *,
                    distance: bool = False, scale: float | None = None) -> Array:
  """Attention of each node over the senders of its incoming edges.

  Args:
    q: [nodes, heads, d] queries (node r's row is used by edges into r).
    k: [nodes, heads, d] keys; v: [nodes, heads, dv] values.
    receivers, senders: int [edges]; edge e lets receivers[e] attend to senders[e].
    distance: False for logits `scale * q_r . k_s`, True for `-scale * ||q_r - k_s||^2`.
    scale: logit scale; None means 1/sqrt(d), as in the dense kernels.

  Returns:
    [nodes, heads, dv] in v's dtype: per receiver, the softmax over its incoming edges
    (float32) of the senders' values. Nodes with no incoming edge get zeros.
  """
  if q.ndim != 3 or q.shape != k.shape or v.ndim != 3 or v.shape[:2] != k.shape[:2]:
    raise ValueError("graph_attention expects q, k [nodes, heads, d] and v [nodes, heads, dv];"
                     f" got shapes {q.shape}, {k.shape}, {v.shape}")
  nodes = q.shape[0]
  _check_ids(receivers, nodes, "receiver")
  _check_ids(senders, nodes, "sender")
  s = _default_scale(q.shape[-1], scale)
  qe = q.astype(jnp.float32)[receivers]                             # [edges, heads, d]
  ke = k.astype(jnp.float32)[senders]
  if distance:
    diff = qe - ke
    logits = -s * jnp.sum(diff * diff, axis=-1)                      # [edges, heads]
  else:
    logits = s * jnp.sum(qe * ke, axis=-1)
  row_max = jax.ops.segment_max(logits, receivers, num_segments=nodes)  # [nodes, heads]
  row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
  weights = jnp.exp(logits - row_max[receivers])                    # [edges, heads]
  denom = jax.ops.segment_sum(weights, receivers, num_segments=nodes)
  messages = weights[..., None] * v.astype(jnp.float32)[senders]    # [edges, heads, dv]
  out = jax.ops.segment_sum(messages, receivers, num_segments=nodes)
  out = out / jnp.where(denom > 0, denom, 1.0)[..., None]
  return out.astype(v.dtype)
