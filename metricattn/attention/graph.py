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
             softmax over the slots with a mask: no scatter in the forward pass; gradients
             in reverse mode only (a custom VJP). For graphs of bounded degree (meshes, k-NN
             graphs, grids).
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

import functools

import jax
import jax.numpy as jnp
import numpy as np

from metricattn.attention.kernels import _default_scale
from metricattn.errors import UserError

Array = jax.Array

IMPLEMENTATIONS = ("ell", "segment", "dense")
# choose_implementation: neighbour lists when the padded slots are at most this many times
# the edges (max degree / mean degree) and the rows at most ELL_MAX_DEGREE wide.
ELL_MAX_PADDING = 2.5
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

  On the 2-core CPU (docs/graph.md, `scripts/bench_graph.py --vs-pyg ... --forms`) the
  neighbour-list kernel's forward+backward was 1.6-6.2x faster than the sorted segments' on
  full rows (torus, k-NN), 2.7x on Delaunay meshes of 10,000 nodes padded 2.4x (17 slots
  for a mean degree of 7) and 1.16-1.25x at 100,000 nodes padded 2.6x: every padded slot
  costs what an edge costs, so the advantage shrinks with the padding; the threshold stays
  below what was measured."""
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

  A loop over the slots (`lax.scan`): slot j's keys gathered by senders[:, j] and its
  logits; the softmax over the filled slots; a second loop sums the weighted values. No
  scatter in the forward pass. The backward pass is written out (`_ell`, a
  `jax.custom_vjp`; reverse mode only): it keeps the weights [slots, nodes * heads], gathers
  the keys and values again and scatters one row per slot into their gradients.

  Two things make this fast on XLA:CPU (scripts/bench_xla_shapes.py, docs/graph.md). Inside
  a loop body each slot's indices are a buffer: unrolled, XLA fused the index arithmetic
  into every gather and recomputed it for each of the row's d elements (an optimization
  barrier does not stop that; XLA:CPU removes barriers before fusion). And every array is
  two-dimensional, [nodes * heads, d] (the tables [nodes, heads * d]): a reduction over the
  last axis of [nodes, 1, d], one head, ran 7-45x slower than over [nodes, d]."""
  n, h, d = q.shape
  dv = v.shape[-1]
  valid = senders >= 0
  idx = jnp.where(valid, senders, 0).T                      # [slots, nodes]
  mask = jnp.repeat(valid.T, h, axis=1)                     # [slots, nodes * heads]
  f32 = jnp.float32
  out = _ell(q.astype(f32).reshape(n * h, d), k.astype(f32).reshape(n, h * d),
             v.astype(f32).reshape(n, h * dv), idx, mask, h, distance, scale)
  return out.reshape(n, h, dv)


def _rows(table, i, rows: int):
  """table[i] as [rows, width]: rows of [nodes, heads * w] split into [nodes * heads, w]."""
  return table.at[i].get(mode="promise_in_bounds").reshape(rows, -1)


def _ell_weights(q, kt, idx, mask, distance: bool, scale: float):
  """The softmax weights [slots, nodes * heads] over each row's filled slots (all zero in a
  row with none)."""
  def logits(_, slot):
    i, m = slot
    return None, jnp.where(m, _logit(q, _rows(kt, i, q.shape[0]), distance, scale), -jnp.inf)
  _, lg = jax.lax.scan(logits, None, (idx, mask))
  row_max = jnp.max(lg, axis=0, initial=-jnp.inf)
  w = jnp.exp(lg - jnp.where(jnp.isfinite(row_max), row_max, 0.0))  # 0 in padding slots
  denom = jnp.sum(w, axis=0)
  return w / jnp.where(denom > 0, denom, 1.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _ell(q, kt, vt, idx, mask, heads: int, distance: bool, scale: float):
  """q [nodes * heads, d], kt [nodes, heads * d], vt [nodes, heads * dv]; idx int [slots,
  nodes] (padding slots point at node 0), mask bool [slots, nodes * heads]."""
  return _ell_fwd(q, kt, vt, idx, mask, heads, distance, scale)[0]


def _ell_fwd(q, kt, vt, idx, mask, heads, distance, scale):
  rows = q.shape[0]

  def weighted_sum(out, slot):
    i, w = slot
    return out + w[:, None] * _rows(vt, i, rows), None

  weights = _ell_weights(q, kt, idx, mask, distance, scale)
  out, _ = jax.lax.scan(weighted_sum, jnp.zeros((rows, vt.shape[1] // heads), jnp.float32),
                        (idx, weights))
  return out, (q, kt, vt, idx, weights, out)


def _ell_bwd(heads, distance, scale, residuals, g):
  """With p the weights and dl = p (g . v_s - g . out) the gradient of each logit:
  dot logits scale q . k: dq = scale sum dl k_s, dk_s += scale dl q;
  distance logits -scale ||q - k||^2: dq = 2 scale (sum dl k_s - q sum dl),
  dk_s += 2 scale dl (q - k_s); dv_s += p g (each sum over a row's slots, each += a
  scatter into the senders)."""
  q, kt, vt, idx, weights, out = residuals
  nodes, rows = kt.shape[0], q.shape[0]
  g_out = jnp.sum(g * out, axis=-1)

  def slot_grads(acc, slot):
    dq, dk, dv, dl_sum, dl_to = acc
    i, w = slot
    add = lambda a, x: a.at[i].add(x.reshape(nodes, -1), mode="promise_in_bounds")
    dl = w * (jnp.sum(g * _rows(vt, i, rows), axis=-1) - g_out)
    dq = dq + dl[:, None] * _rows(kt, i, rows)
    dk, dv = add(dk, dl[:, None] * q), add(dv, w[:, None] * g)
    if distance:
      dl_sum, dl_to = dl_sum + dl, add(dl_to, dl)
    return (dq, dk, dv, dl_sum, dl_to), None

  zeros = (jnp.zeros_like(q), jnp.zeros_like(kt), jnp.zeros_like(vt),
           jnp.zeros(rows, jnp.float32), jnp.zeros((nodes, heads), jnp.float32))
  (dq, dk, dv, dl_sum, dl_to), _ = jax.lax.scan(slot_grads, zeros, (idx, weights))
  if distance:
    dq = 2 * scale * (dq - dl_sum[:, None] * q)
    dk = 2 * scale * (dk - (kt.reshape(nodes, heads, -1) * dl_to[..., None]).reshape(kt.shape))
  else:
    dq, dk = scale * dq, scale * dk
  return dq, dk, dv, None, None


_ell.defvjp(_ell_fwd, _ell_bwd)


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
  (_, h, d), dv, edges = q.shape, v.shape[-1], receivers.shape[0]
  seg = lambda x, op: op(x, receivers, num_segments=nodes, indices_are_sorted=True)
  # Rows [edges * heads, d] rather than [edges, heads, d]: see ell_attention on XLA:CPU.
  gather = lambda a, i, w: (a.astype(jnp.float32).reshape(nodes, h * w)
                            .at[i].get(mode="fill", fill_value=0).reshape(edges * h, w))
  qe, ke = gather(q, receivers, d), gather(k, senders, d)           # [edges * heads, d]
  logits = jnp.where(jnp.repeat(keep, h), _logit(qe, ke, distance, scale), -jnp.inf)
  logits = logits.reshape(edges, h)
  row_max = seg(logits, jax.ops.segment_max)                        # [nodes, heads]
  row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
  weights = jnp.exp(logits - gather(row_max, receivers, 1).reshape(edges, h))
  denom = seg(weights, jax.ops.segment_sum)                         # [nodes, heads]
  values = weights.reshape(edges * h, 1) * gather(v, senders, dv)   # [edges * heads, dv]
  out = seg(values.reshape(edges, h * dv), jax.ops.segment_sum).reshape(nodes, h, dv)
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
