"""Kernels against a plain, obviously-correct reference."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metricattn import attention as A


def reference(q, k, v, mask, scale, kind):
  """Naive: explicit differences for l2, explicit softmax with masked weights zeroed."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  if kind == "dot":
    logits = scale * np.einsum("bqhd,bkhd->bhqk", q, k)
  else:
    diff = q[:, :, None, :, :] - k[:, None, :, :, :]          # [b, q, k, h, d]
    logits = -scale * np.transpose(np.sum(diff ** 2, -1), (0, 3, 1, 2))
  m = np.broadcast_to(mask, logits.shape) if mask is not None else np.ones(logits.shape, bool)
  logits = np.where(m, logits, -np.inf)
  mx = np.max(logits, -1, keepdims=True)
  w = np.where(m, np.exp(logits - np.where(np.isfinite(mx), mx, 0)), 0.0)
  s = w.sum(-1, keepdims=True)
  w = w / np.where(s > 0, s, 1)
  return np.einsum("bhqk,bkhd->bqhd", w, v)


KERNELS = {"dot": A.dot_product_attention, "l2": A.l2_attention}


@pytest.mark.parametrize("kind", ["dot", "l2"])
@pytest.mark.parametrize("seed", range(4))
def test_matches_reference_random_shapes_and_masks(kind, seed):
  rng = np.random.default_rng(seed)
  b, lq, lk, h, d, dv = rng.integers(1, 6, size=6)
  q = rng.normal(size=(b, lq, h, d)).astype(np.float32)
  k = rng.normal(size=(b, lk, h, d)).astype(np.float32)
  v = rng.normal(size=(b, lk, h, dv)).astype(np.float32)
  mask = rng.random((b, 1, lq, lk)) < 0.7
  scale = float(rng.uniform(0.1, 2.0))
  for m in (None, mask):
    out = KERNELS[kind](q, k, v, mask=m, scale=scale)
    np.testing.assert_allclose(out, reference(q, k, v, m, scale, kind), atol=2e-5, rtol=2e-5)
    assert out.shape == (b, lq, h, dv)


def test_default_scale_is_inverse_sqrt_head_dim():
  rng = np.random.default_rng(0)
  q, k, v = (rng.normal(size=(2, 3, 2, 16)).astype(np.float32) for _ in range(3))
  for kind, fn in KERNELS.items():
    np.testing.assert_allclose(fn(q, k, v), reference(q, k, v, None, 0.25, kind), atol=2e-5)


def test_l2_sign_nearest_key_gets_the_most_weight():
  """Distance attention puts most weight on the closest key, dot-product need not."""
  k = jnp.array([[[[0.0, 0.0]], [[3.0, 0.0]], [[10.0, 0.0]]]])   # [1, 3, 1, 2]
  v = jnp.eye(3)[None, :, None, :]                                # one-hot values
  q = jnp.array([[[[2.9, 0.0]]]])
  w_l2 = A.l2_attention(q, k, v, scale=1.0)[0, 0, 0]
  w_dot = A.dot_product_attention(q, k, v, scale=1.0)[0, 0, 0]
  assert int(jnp.argmax(w_l2)) == 1      # nearest key
  assert int(jnp.argmax(w_dot)) == 2     # largest inner product


@pytest.mark.parametrize("fn", KERNELS.values())
def test_fully_masked_row_gives_zeros_and_finite_grads(fn):
  rng = np.random.default_rng(1)
  q, k, v = (jnp.asarray(rng.normal(size=(1, 2, 1, 4)), jnp.float32) for _ in range(3))
  mask = jnp.array([[True, True], [False, False]])[None, None]
  out = fn(q, k, v, mask=mask)
  assert np.all(np.asarray(out[0, 1]) == 0.0)
  assert np.all(np.isfinite(out))
  grads = jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v, mask=mask) ** 2), argnums=(0, 1, 2))(q, k, v)
  assert all(np.all(np.isfinite(g)) for g in grads)


@pytest.mark.parametrize("fn", KERNELS.values())
def test_large_inputs_stay_finite(fn):
  rng = np.random.default_rng(2)
  q, k, v = (jnp.asarray(1e4 * rng.normal(size=(2, 5, 2, 8)), jnp.float32) for _ in range(3))
  assert np.all(np.isfinite(fn(q, k, v)))
  g = jax.grad(lambda q: jnp.sum(fn(q, k, v)))(q)
  assert np.all(np.isfinite(g))


@pytest.mark.parametrize("fn", KERNELS.values())
def test_low_precision_inputs_keep_value_dtype(fn):
  rng = np.random.default_rng(3)
  q, k, v = (jnp.asarray(rng.normal(size=(1, 4, 2, 8)), jnp.bfloat16) for _ in range(3))
  out = fn(q, k, v)
  assert out.dtype == jnp.bfloat16
  ref = fn(*(a.astype(jnp.float32) for a in (q, k, v)))
  np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=2e-2)


@pytest.mark.parametrize("fn", KERNELS.values())
def test_jit_vmap_grad(fn):
  rng = np.random.default_rng(4)
  q, k, v = (jnp.asarray(rng.normal(size=(3, 2, 4, 2, 8)), jnp.float32) for _ in range(3))
  batched = jax.jit(jax.vmap(lambda q, k, v: fn(q, k, v)))(q, k, v)
  looped = jnp.stack([fn(q[i], k[i], v[i]) for i in range(3)])
  np.testing.assert_allclose(batched, looped, atol=1e-6)
  loss = lambda q: jnp.sum(fn(q, k[0], v[0]) ** 2)
  g = jax.grad(loss)(q[0])
  eps = 1e-3
  dq = jnp.zeros_like(q[0]).at[0, 1, 0, 3].set(eps)
  fd = (loss(q[0] + dq) - loss(q[0] - dq)) / (2 * eps)
  np.testing.assert_allclose(g[0, 1, 0, 3], fd, rtol=2e-2, atol=1e-3)


def test_l2_reuses_given_key_norms_about_any_centre():
  rng = np.random.default_rng(5)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 3, 2, 4)), jnp.float32) for _ in range(3))
  for c in (A.key_centre(k), k[:, :1], jnp.zeros((1, 1, 1, 4))):
    out = A.l2_attention(q, k, v, k_sqnorm=A.key_sqnorm(k, c), k_centre=c)
    np.testing.assert_allclose(out, A.l2_attention(q, k, v), atol=1e-6)
  with pytest.raises(ValueError, match="k_centre"):
    A.l2_attention(q, k, v, k_sqnorm=A.key_sqnorm(k, k[:, :1]))


def largest_intermediate(fn, *args) -> int:
  """Element count of the largest tensor in the lowered program (forward and backward)."""
  text = jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a)))).lower(*args).as_text()
  return max(math.prod(int(d) for d in t.split("x")) for t in re.findall(r"tensor<([0-9x]+)x", text))


def test_l2_has_no_pairwise_difference_intermediate():
  """The bias form never builds [b, q, k, h, d] (64*64*32 elements here); the naive form does."""
  def naive(q, k, v):
    w = jax.nn.softmax(-jnp.sum((q[:, :, None] - k[:, None]) ** 2, -1), axis=2)
    return jnp.einsum("bqkh,bkhd->bqhd", w, v)

  q = jnp.zeros((1, 64, 1, 32))
  assert largest_intermediate(naive, q, q, q) >= 64 * 64 * 32
  assert largest_intermediate(A.l2_attention, q, q, q) < 64 * 64 * 32


def test_bad_shapes_are_clear_errors():
  q = jnp.zeros((1, 2, 2, 4))
  with pytest.raises(ValueError, match="do not agree"):
    A.l2_attention(q, jnp.zeros((1, 2, 2, 3)), q)
  with pytest.raises(ValueError, match="rank 4"):
    A.dot_product_attention(q[0], q[0], q[0])


def shifted(rng, shape, c):
  """N(0, 1) float32 snapped so that x + c is exact: the kernel's error alone is measured."""
  x = rng.normal(size=shape).astype(np.float32)
  return (x + c) - c


@pytest.mark.parametrize("shape", [(1, 5, 7, 1, 4), (2, 8, 8, 3, 16), (1, 3, 33, 2, 64)])
def test_l2_is_invariant_to_a_common_offset(shape):
  """l2(q + c, k + c, v) == l2(q, k, v) for |c| up to 1e4 in float32, values and gradients."""
  b, lq, lk, h, d = shape
  rng = np.random.default_rng(d)
  u = rng.normal(size=d)
  mask = rng.random((b, 1, lq, lk)) < 0.7
  for norm in (0.0, 1e2, 1e3, 1e4):
    c = (norm * u / np.linalg.norm(u)).astype(np.float32)
    q, k = shifted(rng, (b, lq, h, d), c), shifted(rng, (b, lk, h, d), c)
    v = rng.normal(size=(b, lk, h, 2)).astype(np.float32)
    w = jnp.asarray(rng.normal(size=(b, lq, h, 2)), jnp.float32)
    loss = lambda q, k, m: jnp.sum(w * A.l2_attention(q, k, v, mask=m))
    for m in (None, mask):
      np.testing.assert_allclose(A.l2_attention(q + c, k + c, v, mask=m),
                                 A.l2_attention(q, k, v, mask=m), atol=1e-4)
      g_shift = jax.grad(loss, argnums=(0, 1))(q + c, k + c, m)
      g = jax.grad(loss, argnums=(0, 1))(q, k, m)
      for a, e in zip(g_shift, g):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, e, atol=1e-3)
