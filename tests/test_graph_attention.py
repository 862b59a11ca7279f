"""Sparse graph attention against the dense kernels with an adjacency mask."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metricattn import attention as A
from metricattn.errors import UserError

HEADS, D, DV = 2, 8, 5


def random_graph(n, self_loops, seed):
  """Duplicate-free random edges; a quarter of the nodes (at least one) get no incoming edge."""
  rng = np.random.default_rng(seed)
  isolated = rng.choice(n, max(1, n // 4), replace=False)
  pairs = [(r, s) for r in range(n) for s in range(n)
           if r not in isolated and (self_loops or r != s)]
  keep = rng.random(len(pairs)) < 0.4
  edges = np.array([p for p, kp in zip(pairs, keep) if kp], np.int32).reshape(-1, 2)
  edges = edges[rng.permutation(len(edges))]  # unsorted receivers
  return jnp.asarray(edges[:, 0]), jnp.asarray(edges[:, 1]), isolated


def random_qkv(n, seed, batch=()):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(kq, (*batch, n, HEADS, D)),
          jax.random.normal(kk, (*batch, n, HEADS, D)) + 0.5,
          jax.random.normal(kv, (*batch, n, HEADS, DV)))


def dense(q, k, v, receivers, senders, distance):
  mask = A.adjacency_mask(receivers, senders, q.shape[0])[None, None]
  kernel = A.l2_attention if distance else A.dot_product_attention
  return kernel(q[None], k[None], v[None], mask=mask)[0]


def sparse(q, k, v, receivers, senders, distance):
  return A.graph_attention(q, k, v, receivers, senders, distance=distance)


GRAPHS = [(5, False), (17, True), (40, False), (40, True)]  # (nodes, self-loops)


@jax.jit
def outputs_and_grads(q, k, v, receivers, senders, cot):
  """{(kind, path): (out, (dq, dk, dv))} for both logit kinds, sparse and dense paths."""
  res = {}
  for distance in (False, True):
    for f in (sparse, dense):
      loss = lambda *a: jnp.sum(f(*a, receivers, senders, distance) * cot)
      res[distance, f.__name__] = (f(q, k, v, receivers, senders, distance),
                                   jax.grad(loss, argnums=(0, 1, 2))(q, k, v))
  return res


@pytest.mark.parametrize("n,self_loops", GRAPHS)
def test_matches_dense_outputs_and_grads(n, self_loops):
  receivers, senders, isolated = random_graph(n, self_loops, seed=n)
  q, k, v = random_qkv(n, seed=n + 1)
  cot = jax.random.normal(jax.random.key(0), v.shape)
  res = outputs_and_grads(q, k, v, receivers, senders, cot)
  for distance in (False, True):
    (out, grads), (want, want_grads) = res[distance, "sparse"], res[distance, "dense"]
    assert out.shape == v.shape and out.dtype == v.dtype
    np.testing.assert_allclose(out, want, atol=1e-5, err_msg=f"distance={distance}")
    np.testing.assert_array_equal(out[isolated], 0.0)
    for name, g, g_want in zip("qkv", grads, want_grads):
      assert np.all(np.isfinite(g)), name
      np.testing.assert_allclose(g, g_want, atol=1e-5, err_msg=f"d{name} distance={distance}")


def test_no_edges_gives_zeros_and_finite_grads():
  q, k, v = random_qkv(4, seed=0)
  empty = jnp.zeros((0,), jnp.int32)
  out = A.graph_attention(q, k, v, empty, empty, distance=True)
  np.testing.assert_array_equal(out, 0.0)
  g = jax.grad(lambda q: jnp.sum(A.graph_attention(q, k, v, empty, empty)))(q)
  np.testing.assert_array_equal(g, 0.0)


def test_jit_and_vmap_over_a_batch_of_graphs():
  n, batch = 17, 3
  receivers, senders, _ = random_graph(n, True, seed=3)
  q, k, v = random_qkv(n, seed=4, batch=(batch,))
  fn = jax.jit(A.graph_attention, static_argnames=("distance", "scale"))
  batched = jax.vmap(fn, in_axes=(0, 0, 0, None, None))(q, k, v, receivers, senders)
  for b in range(batch):
    want = dense(q[b], k[b], v[b], receivers, senders, False)
    np.testing.assert_allclose(batched[b], want, atol=1e-5)
  np.testing.assert_allclose(fn(q[0], k[0], v[0], receivers, senders, distance=True),
                             dense(q[0], k[0], v[0], receivers, senders, True), atol=1e-5)


def test_scale_and_low_precision_values():
  n = 9
  receivers, senders, _ = random_graph(n, True, seed=5)
  q, k, v = random_qkv(n, seed=6)
  mask = A.adjacency_mask(receivers, senders, n)[None, None]
  want = A.l2_attention(q[None], k[None], v[None], mask=mask, scale=0.3)[0]
  got = A.graph_attention(q, k, v, receivers, senders, distance=True, scale=0.3)
  np.testing.assert_allclose(got, want, atol=1e-5)
  got16 = A.graph_attention(q, k, v.astype(jnp.bfloat16), receivers, senders)
  assert got16.dtype == jnp.bfloat16


def test_out_of_range_node_id_is_a_user_error():
  q, k, v = random_qkv(6, seed=7)
  ok = jnp.array([0, 1, 2], jnp.int32)
  with pytest.raises(UserError, match=re.escape("receiver node id 6 is out of range for 6 nodes")):
    A.graph_attention(q, k, v, jnp.array([0, 6, 2], jnp.int32), ok)
  with pytest.raises(UserError, match=re.escape("sender node id -1 is out of range for 6 nodes")):
    A.graph_attention(q, k, v, ok, jnp.array([0, -1, 2], jnp.int32))
  with pytest.raises(UserError, match="out of range for 4 nodes"):
    A.adjacency_mask(ok, jnp.array([0, 1, 4], jnp.int32), 4)
