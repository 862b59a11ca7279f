"""Sparse graph attention (neighbour lists "ell", sorted segments "segment") against the dense
kernels with an adjacency mask and a float64 NumPy reference: values and gradients, isolated
nodes, edges listed twice, padding, jit and vmap."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from metricattn import attention as A
from metricattn.attention import graph as G
from metricattn.errors import UserError

HEADS, D, DV = 2, 8, 5


def random_graph(n, self_loops, seed, duplicates=0):
  """Random edges, receivers unsorted; a quarter of the nodes (at least one) get no incoming
  edge; `duplicates` edges listed a second time."""
  rng = np.random.default_rng(seed)
  isolated = rng.choice(n, max(1, n // 4), replace=False)
  pairs = [(r, s) for r in range(n) for s in range(n)
           if r not in isolated and (self_loops or r != s)]
  keep = rng.random(len(pairs)) < min(0.4, 6 / n)  # at most about 6 senders per node
  edges = np.array([p for p, kp in zip(pairs, keep) if kp], np.int32).reshape(-1, 2)
  edges = np.concatenate([edges, edges[rng.choice(len(edges), duplicates)]])
  edges = edges[rng.permutation(len(edges))]
  return edges[:, 0], edges[:, 1], isolated


def random_qkv(n, seed, batch=()):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(kq, (*batch, n, HEADS, D)),
          jax.random.normal(kk, (*batch, n, HEADS, D)) + 0.5,
          jax.random.normal(kv, (*batch, n, HEADS, DV)))


def reference64(q, k, v, receivers, senders, distance, scale=None):
  """float64 NumPy: per node, softmax over its distinct senders."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  s = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
  out = np.zeros(v.shape)
  pairs = {(int(r), int(t)) for r, t in zip(np.ravel(receivers), np.ravel(senders)) if r >= 0}
  for node in range(q.shape[0]):
    nbrs = sorted(t for r, t in pairs if r == node)
    if not nbrs:
      continue
    kn = k[nbrs]                                                    # [deg, heads, d]
    logits = (-s * ((q[node] - kn) ** 2).sum(-1) if distance
              else s * (q[node] * kn).sum(-1))                      # [deg, heads]
    w = np.exp(logits - logits.max(0))
    out[node] = np.einsum("jh,jhd->hd", w / w.sum(0), v[nbrs])
  return out


def dense(q, k, v, receivers, senders, distance):
  return A.graph_attention(q, k, v, receivers, senders, distance=distance,
                           implementation="dense")


def forms(receivers, senders, n):
  """{name: (receivers, senders, graph_attention kwargs)}: every form of one graph."""
  width = int(G.degrees(receivers, senders, n).max())
  padded_lists = G.neighbour_lists(receivers, senders, n, max_degree=width + 2)
  rs, ss = G.sort_edges(receivers, senders, n)
  pad = np.full(3, -1, np.int32)
  return {
      "ell": (*G.neighbour_lists(receivers, senders, n), {}),
      "ell_padded": (*padded_lists, {"implementation": "ell"}),
      "segment_presorted": (np.r_[rs, pad], np.r_[ss, pad], {"presorted": True}),
      "segment_unsorted": (np.r_[pad[:1], receivers, pad[:2]], np.r_[pad[:1], senders, pad[:2]],
                           {"implementation": "segment"}),
  }


GRAPHS = [(6, False, 0), (19, True, 8)]  # nodes, self-loops, duplicates


@pytest.mark.parametrize("n,self_loops,duplicates", GRAPHS)
def test_every_form_matches_dense_and_float64(n, self_loops, duplicates):
  receivers, senders, isolated = random_graph(n, self_loops, seed=n, duplicates=duplicates)
  q, k, v = random_qkv(n, seed=n + 1)
  cot = jax.random.normal(jax.random.key(0), v.shape)
  graphs = forms(receivers, senders, n)
  graphs["dense"] = (receivers, senders, {"implementation": "dense"})

  @jax.jit  # the graphs are traced: the kernels' in-jit paths, as in training
  def outputs_and_grads(q, k, v, arrays):
    res = {}
    for distance in (False, True):
      for name, (_, _, kw) in graphs.items():
        f = lambda q, k, v: A.graph_attention(q, k, v, *arrays[name], distance=distance, **kw)
        loss = lambda *a: jnp.sum(f(*a) * cot)
        res[distance, name] = (f(q, k, v), jax.grad(loss, argnums=(0, 1, 2))(q, k, v))
    return res

  res = outputs_and_grads(q, k, v, {name: g[:2] for name, g in graphs.items()})
  for distance in (False, True):
    want64 = reference64(q, k, v, receivers, senders, distance)
    want, want_grads = res[distance, "dense"]
    np.testing.assert_allclose(want, want64, atol=2e-6)
    for name in graphs:
      out, grads = res[distance, name]
      msg = f"{name} distance={distance}"
      assert out.shape == v.shape and out.dtype == v.dtype
      np.testing.assert_allclose(out, want64, atol=2e-6, err_msg=msg)
      np.testing.assert_array_equal(out[isolated], 0.0)
      for which, g, g_want in zip("qkv", grads, want_grads):
        assert np.all(np.isfinite(g)), which
        np.testing.assert_allclose(g, g_want, atol=2e-5, err_msg=f"d{which} {msg}")
      np.testing.assert_array_equal(grads[0][isolated], 0.0)  # no query gradient


def test_eager_calls_build_the_form_on_the_host():
  n = 17
  receivers, senders, _ = random_graph(n, True, seed=8, duplicates=6)
  q, k, v = random_qkv(n, seed=9)
  want = reference64(q, k, v, receivers, senders, True)
  for implementation in (None, "ell", "segment", "dense"):
    got = A.graph_attention(q, k, v, receivers, senders, distance=True,
                            implementation=implementation)
    np.testing.assert_allclose(got, want, atol=2e-6, err_msg=str(implementation))


def test_edges_listed_twice_count_once():
  n = 6
  r = np.array([0, 0, 0, 1, 1, 2], np.int32)
  s = np.array([1, 2, 2, 0, 0, 2], np.int32)  # (0, 2) and (1, 0) twice
  q, k, v = random_qkv(n, seed=2)
  once = A.graph_attention(q, k, v, np.array([0, 0, 1, 2]), np.array([1, 2, 0, 2]),
                           implementation="dense")
  for implementation in (None, "ell", "segment"):
    np.testing.assert_allclose(A.graph_attention(q, k, v, r, s, implementation=implementation),
                               once, atol=1e-6)
  traced = jax.jit(lambda r, s: A.graph_attention(q, k, v, r, s))(r, s)
  np.testing.assert_allclose(traced, once, atol=1e-6)


def test_host_forms():
  r = np.array([2, 0, 0, 2, 0, -1], np.int32)
  s = np.array([1, 2, 1, 1, 2, -1], np.int32)
  rec, nbr = G.neighbour_lists(r, s, 4)
  np.testing.assert_array_equal(nbr, [[1, 2], [-1, -1], [1, -1], [-1, -1]])
  np.testing.assert_array_equal(rec, [[0, 0], [-1, -1], [2, -1], [-1, -1]])
  assert G.neighbour_lists(r, s, 4, max_degree=3)[1].shape == (4, 3)
  with pytest.raises(UserError, match="width 1 cannot hold node 0's 2 distinct senders"):
    G.neighbour_lists(r, s, 4, max_degree=1)
  np.testing.assert_array_equal(np.stack(G.sort_edges(r, s, 4)), [[0, 0, 2], [1, 2, 1]])
  np.testing.assert_array_equal(G.degrees(r, s, 4), [2, 0, 1, 0])
  # a torus grid (every node 6 neighbours) -> ell; a star (one node of high degree) -> segment
  i = np.arange(64)
  grid_r = np.repeat(i, 6)
  grid_s = (grid_r + np.tile([1, -1, 8, -8, 9, -9], 64)) % 64
  assert G.choose_implementation(grid_r, grid_s, 64) == "ell"
  star_r = np.r_[np.zeros(63, int), i[1:], i[1:]]
  star_s = np.r_[i[1:], np.zeros(63, int), (i[1:] % 63) + 1]
  assert G.choose_implementation(star_r, star_s, 64) == "segment"
  assert G.graph_layout(grid_r, grid_s, 64)[0] == "ell"


def test_no_edges_gives_zeros_and_finite_grads():
  q, k, v = random_qkv(4, seed=0)
  empty = jnp.zeros((0,), jnp.int32)
  lists = -jnp.ones((4, 2), jnp.int32)
  for r, s in ((empty, empty), (lists, lists)):
    for fn in (A.graph_attention, jax.jit(A.graph_attention)):
      np.testing.assert_array_equal(fn(q, k, v, r, s), 0.0)
    g = jax.grad(lambda q: jnp.sum(A.graph_attention(q, k, v, r, s, distance=True)))(q)
    np.testing.assert_array_equal(g, 0.0)


def test_jit_and_vmap_over_a_batch_of_graphs():
  n, batch = 17, 3
  graphs = [random_graph(n, True, seed=3 + b, duplicates=2)[:2] for b in range(batch)]
  q, k, v = random_qkv(n, seed=4, batch=(batch,))
  fn = jax.jit(jax.vmap(lambda q, k, v, r, s: A.graph_attention(q, k, v, r, s, distance=True)))
  width = max(int(G.degrees(r, s, n).max()) for r, s in graphs)
  lists = [G.neighbour_lists(r, s, n, max_degree=width) for r, s in graphs]
  longest = max(len(r) for r, _ in graphs)
  padded = [[np.pad(a, (0, longest - len(a)), constant_values=-1) for a in g] for g in graphs]
  for stacked in (lists, padded):
    r, s = (np.stack([g[i] for g in stacked]) for i in (0, 1))
    got = fn(q, k, v, r, s)
    for b, (rb, sb) in enumerate(graphs):
      np.testing.assert_allclose(got[b], reference64(q[b], k[b], v[b], rb, sb, True),
                                 atol=2e-6)


def test_scale_and_low_precision_values():
  n = 9
  receivers, senders, _ = random_graph(n, True, seed=5)
  q, k, v = random_qkv(n, seed=6)
  want = reference64(q, k, v, receivers, senders, True, scale=0.3)
  for implementation in ("ell", "segment"):
    got = A.graph_attention(q, k, v, receivers, senders, distance=True, scale=0.3,
                            implementation=implementation)
    np.testing.assert_allclose(got, want, atol=2e-6)
    got16 = A.graph_attention(q, k, v.astype(jnp.bfloat16), receivers, senders,
                              implementation=implementation)
    assert got16.dtype == jnp.bfloat16


def test_layer_graph_forms_agree_with_the_dense_mask():
  n = 23
  receivers, senders, _ = random_graph(n, True, seed=11, duplicates=4)
  x = jax.random.normal(jax.random.key(3), (n, 12))
  mask = A.adjacency_mask(receivers, senders, n)[None, None]
  for kind in A.KINDS:
    layer = A.Attention(12, kind=kind, num_heads=2, qk_features=8, d_mlp=4,
                        rngs=nnx.Rngs(params=0))
    want = layer(x[None], mask=mask)[0]
    for r, s in ((receivers, senders), G.neighbour_lists(receivers, senders, n)):
      np.testing.assert_allclose(layer.graph(x, r, s), want, atol=1e-5, err_msg=kind)
    np.testing.assert_allclose(layer.graph(x, receivers, senders,
                                           graph_implementation="segment"), want, atol=1e-5)


def test_bad_graphs_are_user_errors():
  q, k, v = random_qkv(6, seed=7)
  ok = jnp.array([0, 1, 2], jnp.int32)
  with pytest.raises(UserError, match=re.escape("receiver node id 6 is out of range for 6 nodes")):
    A.graph_attention(q, k, v, jnp.array([0, 6, 2], jnp.int32), ok)
  with pytest.raises(UserError, match=re.escape("sender node id -2 is out of range for 6 nodes")):
    A.graph_attention(q, k, v, ok, jnp.array([0, -2, 2], jnp.int32))
  with pytest.raises(UserError, match="out of range for 4 nodes"):
    A.adjacency_mask(ok, jnp.array([0, 1, 4], jnp.int32), 4)
  with pytest.raises(UserError, match="-1 .padding. as receiver or sender but not both"):
    A.graph_attention(q, k, v, ok, jnp.array([0, -1, 2], jnp.int32))
  with pytest.raises(UserError, match="unknown graph attention implementation 'xla'"):
    A.graph_attention(q, k, v, ok, ok, implementation="xla")
  with pytest.raises(UserError, match="'ell' needs neighbour lists"):
    jax.jit(lambda r, s: A.graph_attention(q, k, v, r, s, implementation="ell"))(ok, ok)
  with pytest.raises(UserError, match="presorted=True needs edges sorted"):
    A.graph_attention(q, k, v, jnp.array([1, 0]), jnp.array([0, 1]), presorted=True)
  r, s = G.neighbour_lists(np.array([0, 0]), np.array([1, 2]), 6)
  with pytest.raises(UserError, match="repeats a sender"):
    A.graph_attention(q, k, v, np.where(r >= 0, 0, -1), np.where(s >= 0, 1, -1))
  with pytest.raises(UserError, match="need receivers\\[n, j\\] == n"):
    A.graph_attention(q, k, v, np.where(r >= 0, 3, -1), s)
