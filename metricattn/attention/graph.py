"""Graph-masked attention: dense (a boolean adjacency mask) and sparse (neighbour lists or
sorted segments).

A graph is an edge list: two int32 arrays [edges], edge e lets node `receivers[e]` attend to
node `senders[e]`; an edge (-1, -1) is padding (batches of a fixed length) and is ignored.
Self-loops count only when listed as edges. An edge listed twice counts once, as in the
dense mask (`adjacency_mask` sets mask[r, s] True whatever the count): a node's softmax runs
over its distinct senders.

Forms (`implementation=` of `graph_attention`; all give the dense kernels' values):

  "ell"      neighbour lists: receivers, senders int32 [nodes, max_degree], row n holding
             node n's distinct senders in ascending order, padded with -1 (receivers[n, j]
             is n in a filled slot, -1 in a padding slot): `neighbour_lists` builds them on
             the host in NumPy. The kernel gathers each slot's keys and values and takes the
             softmax over the slots with a mask: no scatter in the forward pass. For graphs
             of bounded degree (meshes, k-NN graphs, grids).
  "segment"  an edge list sorted by receiver: one logit per edge, segment max and sum with
             `indices_are_sorted=True`. For the rest (a few nodes of high degree would pad
             every row of a neighbour list to their degree). `sort_edges` sorts and
             deduplicates on the host; an edge list that is a tracer (inside jit) is sorted
             and deduplicated in JAX unless the caller says `presorted=True`.
  "dense"    the dense masked kernels with `adjacency_mask` ([nodes, nodes]; tests and
             small graphs).
  None       a 2-D (neighbour-list) graph runs "ell". A 1-D edge list with concrete values
             runs the form `choose_implementation` picks from its degrees (its neighbour
             lists or sorted edges built on the host, on every call: build them once with
             `graph_layout` for repeated calls); a traced 1-D edge list runs "segment".

Nodes with no incoming edge (and rows of a neighbour list with no filled slot) get zeros,
as the dense kernels give for a fully masked row, with zero gradients.

No [nodes, nodes] array exists in the sparse forms. All three attention kinds need only two
logits: `softmax` uses dot logits; `l2` and `metric` use distance logits (metric is l2 on
g-transformed queries and keys, applied by the caller).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from metricattn.attention.kernels import _default_scale
from metricattn.errors import UserError

Array = jax.Array

IMPLEMENTATIONS = ("ell", "segment", "dense")
# choose_implementation: neighbour lists when the padded slots are at most this many times
# the edges (max degree / mean degree) and the rows at most ELL_MAX_DEGREE wide.
ELL_MAX_PADDING = 1.25
ELL_MAX_DEGREE = 32


def _concrete(*arrays) -> bool:
  return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def _check_ids(ids, num_nodes: int, name: str) -> None:
  """Eager range check of node ids (-1: padding); skipped for tracers so that jit still
  works."""
  if not _concrete(ids):
    return
  ids = np.asarray(ids)
  bad = ids[(ids < -1) | (ids >= num_nodes)]
  if bad.size:
    raise UserError(f"graph attention: {name} node id {int(bad[0])} is out of range for "
                    f"{num_nodes} nodes (allowed 0..{num_nodes - 1}, or -1 for padding)")


def _check_padding(receivers, senders) -> None:
  """Eager: padding (-1) in both arrays of an edge or slot, or in neither."""
  if _concrete(receivers, senders) and np.any((np.asarray(receivers) < 0)
                                              != (np.asarray(senders) < 0)):
    raise UserError("graph attention: an edge has -1 (padding) as receiver or sender but "
                    "not both")


def check_graph_implementation(implementation: str | None) -> str | None:
  if implementation is not None and implementation not in IMPLEMENTATIONS:
    raise UserError(f"unknown graph attention implementation {implementation!r}; allowed: "
                    f"{', '.join(IMPLEMENTATIONS)} (or None to choose)")
  return implementation


# ---------------------------------------------------------------- host-side graph building

def unique_edges(receivers, senders, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
  """(receivers, senders) int32 [distinct edges] on the host: each (receiver, sender) pair
  once, sorted by receiver, then sender."""
  r = np.asarray(receivers, np.int64).ravel()
  s = np.asarray(senders, np.int64).ravel()
  if r.shape != s.shape:
    raise UserError(f"graph attention: receivers and senders differ in length ({r.size} "
                    f"against {s.size})")
  _check_ids(r, num_nodes, "receiver")
  _check_ids(s, num_nodes, "sender")
  _check_padding(r, s)
  real = r >= 0
  key = np.unique(r[real] * num_nodes + s[real])
  return (key // num_nodes).astype(np.int32), (key % num_nodes).astype(np.int32)


def sort_edges(receivers, senders, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
  """The "segment" form on the host: the distinct edges sorted by receiver (and sender),
  padding dropped; pass them with `presorted=True`."""
  return unique_edges(receivers, senders, num_nodes)


def degrees(receivers, senders, num_nodes: int) -> np.ndarray:
  """int [num_nodes]: each node's number of distinct senders (its in-degree)."""
  r, _ = unique_edges(receivers, senders, num_nodes)
  return np.bincount(r, minlength=num_nodes)


def neighbour_lists(receivers, senders, num_nodes: int,
                    max_degree: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """The "ell" form on the host: (receivers, senders) int32 [num_nodes, max_degree]; row n
  holds node n's distinct senders ascending, then -1 (receivers: n, then -1).

  `max_degree` (default: the graph's) pads every row to a common width, e.g. the largest
  degree of a data set so that every batch has one shape; smaller than a node's degree is
  an error."""
  r, s = unique_edges(receivers, senders, num_nodes)
  deg = np.bincount(r, minlength=num_nodes)
  width = int(deg.max(initial=0))
  if max_degree is not None:
    if max_degree < width:
      raise UserError(f"neighbour lists of width {max_degree} cannot hold node "
                      f"{int(deg.argmax())}'s {width} distinct senders")
    width = int(max_degree)
  starts = np.concatenate([[0], np.cumsum(deg)[:-1]])
  slot = np.arange(len(r)) - np.repeat(starts, deg)          # r is sorted: slot within its row
  nbr = np.full((num_nodes, width), -1, np.int32)
  nbr[r, slot] = s
  rec = np.where(nbr >= 0, np.arange(num_nodes, dtype=np.int32)[:, None], -1).astype(np.int32)
  return rec, nbr


def choose_implementation(receivers, senders, num_nodes: int) -> str:
  """The form for a graph: "ell" for a graph whose largest in-degree is at most ELL_MAX_PADDING times its mean
  in-degree (over nodes with an edge) and at most ELL_MAX_DEGREE, else "segment".

  On the 2-core CPU (docs/graph.md) every padded slot costs what an edge costs and
  neither form's gathers are much cheaper than the other's: neighbour lists win only when
  the rows are nearly full (a grid, a k-NN graph), not at the meshes' 13 slots for a mean
  of 7 edges per vertex."""
  deg = degrees(receivers, senders, num_nodes)
  deg = deg[deg > 0]
  if not deg.size:
    return "segment"
  if deg.max() <= ELL_MAX_DEGREE and deg.max() <= ELL_MAX_PADDING * deg.mean():
    return "ell"
  return "segment"


def graph_layout(receivers, senders, num_nodes: int, implementation: str | None = None,
                 max_degree: int | None = None) -> tuple[str, np.ndarray, np.ndarray]:
  """(implementation, receivers, senders) on the host: the form `implementation` (None:
  `choose_implementation`) built from an edge list, to pass to `graph_attention` (with
  `presorted=True` for "segment")."""
  implementation = (check_graph_implementation(implementation)
                    or choose_implementation(receivers, senders, num_nodes))
  if implementation == "ell":
    return (implementation, *neighbour_lists(receivers, senders, num_nodes, max_degree))
  if implementation == "segment":
    return (implementation, *sort_edges(receivers, senders, num_nodes))
  r, s = unique_edges(receivers, senders, num_nodes)
  return implementation, r, s


def adjacency_mask(receivers: Array, senders: Array, num_nodes: int) -> Array:
  """bool [num_nodes, num_nodes] with mask[r, s] True for each edge (r, s).

  For the dense kernels' `mask` argument: `mask=adjacency_mask(r, s, n)[None, None]`.
  Takes an edge list [edges] or neighbour lists [nodes, max_degree]; -1 (padding) ignored.
  """
  _check_ids(receivers, num_nodes, "receiver")
  _check_ids(senders, num_nodes, "sender")
  r, s = jnp.ravel(receivers), jnp.ravel(senders)
  keep = (r >= 0) & (s >= 0)  # -1 would wrap around to the last node: padding is dropped
  r, s = jnp.where(keep, r, num_nodes), jnp.where(keep, s, num_nodes)
  return jnp.zeros((num_nodes, num_nodes), bool).at[r, s].set(True, mode="drop")


# ---------------------------------------------------------------- kernels

def _logit(q: Array, k: Array, distance: bool, scale: float) -> Array:
  """[..., heads, d] x2 -> [..., heads] float32."""
  if distance:
    diff = q - k
    return -scale * jnp.sum(diff * diff, axis=-1)
  return scale * jnp.sum(q * k, axis=-1)


def ell_attention(q: Array, k: Array, v: Array, senders: Array, *, distance: bool,
                  scale: float) -> Array:
  """Neighbour-list attention: senders int32 [nodes, slots], -1 in padding slots.

  One slot at a time, the slot loop unrolled (every array is [nodes, heads, ...]): slot j's
  keys gathered by senders[:, j] and its logits, the row max over the filled slots, then
  the weights and the weighted sum of the gathered values. No scatter in the forward pass;
  gradients by autodiff (the gathers' transposes scatter into k and v). Unrolled rather
  than one [nodes, slots, ...] array: XLA:CPU reduces over a middle axis slowly, and a
  slot-major [slots, nodes, ...] layout measured slower still (docs/graph.md)."""
  valid = senders >= 0
  idx = jnp.where(valid, senders, 0)
  qf, kf, vf = (a.astype(jnp.float32) for a in (q, k, v))
  take = lambda a, j: a.at[idx[:, j]].get(mode="promise_in_bounds")
  logits = [jnp.where(valid[:, j, None], _logit(qf, take(kf, j), distance, scale), -jnp.inf)
            for j in range(senders.shape[1])]
  row_max = jnp.full(q.shape[:2], -jnp.inf, jnp.float32)
  for lg in logits:
    row_max = jnp.maximum(row_max, lg)
  row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
  denom = jnp.zeros(q.shape[:2], jnp.float32)
  out = jnp.zeros(v.shape, jnp.float32)
  for j, lg in enumerate(logits):
    w = jnp.exp(lg - row_max)                                        # 0 in padding slots
    denom = denom + w
    out = out + w[..., None] * take(vf, j)
  return out / jnp.where(denom > 0, denom, 1.0)[..., None]


def _sort_dedupe(receivers: Array, senders: Array, nodes: int):
  """In JAX: edges sorted by (receiver, sender), padding edges (-1) last with receiver
  `nodes`, and a mask of the first occurrence of each real edge."""
  pad = (receivers < 0) | (senders < 0)
  r = jnp.where(pad, nodes, receivers.astype(jnp.int32))
  r, s = jax.lax.sort((r, senders.astype(jnp.int32)), num_keys=2)
  first = jnp.concatenate([jnp.ones((min(1, r.shape[0]),), bool),
                           (r[1:] != r[:-1]) | (s[1:] != s[:-1])])
  return r, s, first & (r < nodes)


def segment_attention(q: Array, k: Array, v: Array, receivers: Array, senders: Array, *,
                      distance: bool, scale: float, presorted: bool = False) -> Array:
  """Edge-list attention with segment reductions over receivers sorted ascending.

  `presorted`: the edges are sorted by receiver with no (receiver, sender) pair repeated
  (`sort_edges`), padding edges (-1, -1) last; otherwise they are sorted and deduplicated
  here, in JAX."""
  nodes = q.shape[0]
  if presorted:
    keep = senders >= 0
    receivers = jnp.where(keep, receivers, nodes)   # padding last, out of range: dropped
  else:
    receivers, senders, keep = _sort_dedupe(receivers, senders, nodes)
  senders = jnp.where(keep, senders, 0)
  seg = lambda x, op: op(x, receivers, num_segments=nodes, indices_are_sorted=True)
  gather = lambda a, i: a.astype(jnp.float32).at[i].get(mode="fill", fill_value=0)
  qe, ke = gather(q, receivers), gather(k, senders)                 # [edges, heads, d]
  logits = jnp.where(keep[:, None], _logit(qe, ke, distance, scale), -jnp.inf)
  row_max = seg(logits, jax.ops.segment_max)                        # [nodes, heads]
  row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
  weights = jnp.exp(logits - gather(row_max, receivers))            # [edges, heads]
  denom = seg(weights, jax.ops.segment_sum)
  out = seg(weights[..., None] * gather(v, senders), jax.ops.segment_sum)
  return out / jnp.where(denom > 0, denom, 1.0)[..., None]


def _check_presorted(receivers, senders, nodes: int) -> None:
  if not _concrete(receivers, senders):
    return
  r, s = np.asarray(receivers, np.int64), np.asarray(senders, np.int64)
  real = r >= 0
  if (np.any(np.diff(r[real] * nodes + s[real]) <= 0)
      or np.any(np.diff(real.astype(np.int8)) > 0)):  # padding only at the end
    raise UserError("graph attention: presorted=True needs edges sorted by receiver (then "
                    "sender) with no edge repeated; build them with sort_edges")


def _dense(q, k, v, receivers, senders, distance, scale):
  from metricattn.attention.kernels import dot_product_attention, l2_attention
  mask = adjacency_mask(receivers, senders, q.shape[0])[None, None]
  kernel = l2_attention if distance else dot_product_attention
  return kernel(q[None], k[None], v[None], mask=mask, scale=scale, implementation="xla")[0]


def graph_attention(q: Array, k: Array, v: Array, receivers: Array, senders: Array, *,
                    distance: bool = False, scale: float | None = None,
                    implementation: str | None = None, presorted: bool = False) -> Array:
  """Attention of each node over its distinct senders.

  Args:
    q: [nodes, heads, d] queries (node r's row is used by edges into r).
    k: [nodes, heads, d] keys; v: [nodes, heads, dv] values.
    receivers, senders: an edge list, int [edges] (edge e lets receivers[e] attend to
      senders[e]), or neighbour lists, int [nodes, max_degree] padded with -1
      (`neighbour_lists`).
    distance: False for logits `scale * q_r . k_s`, True for `-scale * ||q_r - k_s||^2`.
    scale: logit scale; None means 1/sqrt(d), as in the dense kernels.
    implementation: "ell", "segment", "dense" or None (see the module docstring).
    presorted: for "segment" (or None) on an edge list: the edges are already sorted and
      distinct (`sort_edges`); checked when they are concrete.

  Returns:
    [nodes, heads, dv] in v's dtype: per receiver, the softmax over its distinct senders
    (float32) of their values. Nodes with no incoming edge get zeros.
  """
  if q.ndim != 3 or q.shape != k.shape or v.ndim != 3 or v.shape[:2] != k.shape[:2]:
    raise ValueError("graph_attention expects q, k [nodes, heads, d] and v [nodes, heads, dv];"
                     f" got shapes {q.shape}, {k.shape}, {v.shape}")
  check_graph_implementation(implementation)
  nodes = q.shape[0]
  receivers, senders = jnp.asarray(receivers), jnp.asarray(senders)
  if receivers.shape != senders.shape or receivers.ndim not in (1, 2):
    raise UserError("graph attention: receivers and senders must be two edge lists [edges] "
                    f"or two neighbour lists [nodes, max_degree]; got shapes "
                    f"{receivers.shape}, {senders.shape}")
  s = _default_scale(q.shape[-1], scale)
  lists = receivers.ndim == 2
  _check_ids(receivers, nodes, "receiver")
  _check_ids(senders, nodes, "sender")
  _check_padding(receivers, senders)
  if implementation == "dense":
    out = _dense(q, k, v, receivers, senders, distance, s)
  elif lists:
    if receivers.shape[0] != nodes:
      raise UserError(f"graph attention: neighbour lists have {receivers.shape[0]} rows for "
                      f"{nodes} nodes")
    if implementation == "segment":
      raise UserError("graph attention: implementation 'segment' takes an edge list [edges], "
                      "not neighbour lists")
    _check_lists(receivers, senders)
    out = ell_attention(q, k, v, senders, distance=distance, scale=s)
  else:
    if _concrete(receivers, senders) and not presorted:
      implementation, receivers, senders = graph_layout(receivers, senders, nodes,
                                                        implementation)
      return graph_attention(q, k, v, receivers, senders, distance=distance, scale=scale,
                             implementation=implementation, presorted=True)
    if implementation == "ell":
      raise UserError("graph attention: implementation 'ell' needs neighbour lists; build "
                      "them on the host with neighbour_lists (inside jit an edge list "
                      "cannot be turned into them)")
    if presorted:
      _check_presorted(receivers, senders, nodes)
    out = segment_attention(q, k, v, receivers, senders, distance=distance, scale=s,
                            presorted=presorted)
  return out.astype(v.dtype)


def _check_lists(receivers, senders) -> None:
  """Eager check of the neighbour-list form (rows' receivers, padding in both, no repeats)."""
  if not _concrete(receivers, senders):
    return
  r, s = np.asarray(receivers), np.asarray(senders)
  rows = np.arange(r.shape[0])[:, None]
  if np.any((s >= 0) != (r >= 0)) or np.any((r >= 0) & (r != rows)):
    raise UserError("graph attention: neighbour lists need receivers[n, j] == n where "
                    "senders[n, j] >= 0 and -1 where it is -1; build them with "
                    "neighbour_lists")
  filled = np.where(s >= 0, s, -1 - np.arange(s.shape[1])[None, :])  # padding never equal
  srt = np.sort(filled, axis=1)
  if np.any(srt[:, 1:] == srt[:, :-1]):
    raise UserError("graph attention: a neighbour list repeats a sender (an edge counts "
                    "once); build them with neighbour_lists")
