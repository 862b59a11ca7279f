"""Blockwise attention: online softmax over blocks, memory linear in length (pure JAX).

`blockwise_attention(q, k, v, mask)` equals `softmax(q . k^T) v` with logits exactly `q . k`
(the caller has scaled or augmented q and k: see `kernels.py`, where L2 attention becomes
this dot product of augmented vectors, so both kinds share this one kernel). It never builds
the [q_len, kv_len] logits: queries go in blocks of `block_q` (one after the other,
`lax.map`), and for each query block the keys in blocks of `block_k` (`lax.scan`), keeping
the running row maximum, normaliser and weighted sum of values (the online softmax of
flash attention). The backward pass (`jax.custom_vjp`) stores only the output and the
per-row log-sum-exp and recomputes each block's weights, so forward and backward hold
O(block_q * block_k) logits at a time.

Shapes are those of the kernels ([batch, len, heads, dim]); `mask` is boolean, broadcastable
to [batch, heads, q_len, kv_len], True where a query may attend to a key. Logits, softmax
and accumulation are float32; the output has the dtype of `v`. A query row that may attend
to no key returns zeros with zero gradients. Lengths need not divide the blocks: q, k and v
are zero-padded and the padded keys masked.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

# Block sizes: 512 x 512 float32 logits per head is 1 MiB, a size at which XLA:CPU's matmuls
# run near full speed (scripts/bench_attention.py --blocks compares others).
BLOCK_Q = 512
BLOCK_K = 512


def blockwise_attention(q: Array, k: Array, v: Array, mask: Array | None = None, *,
                        block_q: int | None = None, block_k: int | None = None) -> Array:
  """softmax(q . k^T) v over blocks; q [b, q_len, h, d], k [b, kv_len, h, d],
  v [b, kv_len, h, dv], mask broadcastable to [b, h, q_len, kv_len] -> [b, q_len, h, dv].
  Block sizes default to BLOCK_Q and BLOCK_K (read at call time)."""
  lq, lk = q.shape[1], k.shape[1]
  bq, bk = min(block_q or BLOCK_Q, lq), min(block_k or BLOCK_K, lk)
  nq, nk = -(-lq // bq), -(-lk // bk)
  # [b, len, h, d] float32 -> [b, h, len padded to whole blocks, d]
  to_blocks = lambda x, n: jnp.pad(jnp.swapaxes(x.astype(jnp.float32), 1, 2),
                                   ((0, 0), (0, 0), (0, n - x.shape[1]), (0, 0)))
  qt, kt, vt = to_blocks(q, nq * bq), to_blocks(k, nk * bk), to_blocks(v, nk * bk)
  if mask is not None:
    mask = jnp.asarray(mask, bool)
    mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    pad = [(0, 0), (0, 0), (0, nq * bq - lq if mask.shape[2] > 1 else 0),
           (0, nk * bk - lk if mask.shape[3] > 1 else 0)]
    mask = jnp.pad(mask, pad, constant_values=False)
  out = _flash(qt, kt, vt, mask, bq, bk, lk)
  return jnp.swapaxes(out[:, :, :lq], 1, 2).astype(v.dtype)


def _block_allowed(mask: Array | None, i, j, bq: int, bk: int, lk: int,
                   padded_keys: bool) -> Array | None:
  """Boolean [b|1, h|1, bq|1, bk|1] for query block i and key block j, or None (all)."""
  allowed = None
  if mask is not None:
    allowed = mask
    if mask.shape[2] > 1:
      allowed = lax.dynamic_slice_in_dim(allowed, i * bq, bq, axis=2)
    if mask.shape[3] > 1:
      allowed = lax.dynamic_slice_in_dim(allowed, j * bk, bk, axis=3)
  if padded_keys:
    real = (j * bk + jnp.arange(bk) < lk)[None, None, None, :]
    allowed = real if allowed is None else allowed & real
  return allowed


def _forward(q, k, v, mask, bq, bk, lk):
  """Output [b, h, Lq, dv] and log-sum-exp [b, h, Lq] (0 for rows with no allowed key)."""
  nq, nk = q.shape[2] // bq, k.shape[2] // bk
  padded_keys = nk * bk != lk

  def query_block(i):
    qi = lax.dynamic_slice_in_dim(q, i * bq, bq, axis=2)

    def key_block(carry, j):
      row_max, norm, acc = carry
      kj = lax.dynamic_slice_in_dim(k, j * bk, bk, axis=2)
      vj = lax.dynamic_slice_in_dim(v, j * bk, bk, axis=2)
      s = jnp.einsum("bhqd,bhkd->bhqk", qi, kj)
      allowed = _block_allowed(mask, i, j, bq, bk, lk, padded_keys)
      if allowed is not None:
        s = jnp.where(allowed, s, -jnp.inf)
      new_max = jnp.maximum(row_max, jnp.max(s, axis=-1))
      safe_max = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
      p = jnp.exp(s - safe_max[..., None])
      rescale = jnp.exp(row_max - safe_max)
      norm = norm * rescale + jnp.sum(p, axis=-1)
      acc = acc * rescale[..., None] + jnp.einsum("bhqk,bhkd->bhqd", p, vj)
      return (new_max, norm, acc), None

    b, h = q.shape[:2]
    init = (jnp.full((b, h, bq), -jnp.inf, jnp.float32), jnp.zeros((b, h, bq), jnp.float32),
            jnp.zeros((b, h, bq, v.shape[-1]), jnp.float32))
    (row_max, norm, acc), _ = lax.scan(key_block, init, jnp.arange(nk))
    nonempty = norm > 0
    out = acc / jnp.where(nonempty, norm, 1.0)[..., None]
    lse = jnp.where(nonempty, row_max + jnp.log(jnp.where(nonempty, norm, 1.0)), 0.0)
    return out, lse

  out, lse = lax.map(query_block, jnp.arange(nq))     # [nq, b, h, bq, dv], [nq, b, h, bq]
  b, h = q.shape[:2]
  out = jnp.moveaxis(out, 0, 2).reshape(b, h, nq * bq, v.shape[-1])
  lse = jnp.moveaxis(lse, 0, 2).reshape(b, h, nq * bq)
  return out, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _flash(q, k, v, mask, bq, bk, lk):
  """q [b, h, Lq, d], k [b, h, Lk, d], v [b, h, Lk, dv] float32, lengths whole blocks; keys
  from lk on are padding. -> [b, h, Lq, dv]."""
  return _forward(q, k, v, mask, bq, bk, lk)[0]


def _flash_fwd(q, k, v, mask, bq, bk, lk):
  out, lse = _forward(q, k, v, mask, bq, bk, lk)
  return out, (q, k, v, mask, out, lse)


def _flash_bwd(bq, bk, lk, residuals, d_out):
  """Flash-attention backward: per key block, over query blocks, recompute P = exp(S - lse);
  dV += P^T dO, dS = P (dO V^T - rowsum(dO O)), dK += dS^T Q, dQ += dS K."""
  q, k, v, mask, out, lse = residuals
  d_out = d_out.astype(jnp.float32)
  delta = jnp.sum(d_out * out, axis=-1)                 # [b, h, Lq]
  nq, nk = q.shape[2] // bq, k.shape[2] // bk
  padded_keys = nk * bk != lk
  sl = lambda x, i, n: lax.dynamic_slice_in_dim(x, i * n, n, axis=2)

  def key_block(dq, j):
    kj, vj = sl(k, j, bk), sl(v, j, bk)

    def query_block(carry, i):
      dq, dk, dv = carry
      qi, doi, lsei, di = sl(q, i, bq), sl(d_out, i, bq), sl(lse, i, bq), sl(delta, i, bq)
      s = jnp.einsum("bhqd,bhkd->bhqk", qi, kj)
      allowed = _block_allowed(mask, i, j, bq, bk, lk, padded_keys)
      if allowed is not None:
        s = jnp.where(allowed, s, -jnp.inf)
      p = jnp.exp(s - lsei[..., None])
      dv = dv + jnp.einsum("bhqk,bhqd->bhkd", p, doi)
      ds = p * (jnp.einsum("bhqd,bhkd->bhqk", doi, vj) - di[..., None])
      dk = dk + jnp.einsum("bhqk,bhqd->bhkd", ds, qi)
      dq = lax.dynamic_update_slice_in_dim(
          dq, sl(dq, i, bq) + jnp.einsum("bhqk,bhkd->bhqd", ds, kj), i * bq, axis=2)
      return (dq, dk, dv), None

    init = (dq, jnp.zeros_like(kj), jnp.zeros_like(vj))
    (dq, dk, dv), _ = lax.scan(query_block, init, jnp.arange(nq))
    return dq, (dk, dv)

  dq, (dk, dv) = lax.scan(key_block, jnp.zeros_like(q), jnp.arange(nk))
  dk = jnp.moveaxis(dk, 0, 2).reshape(k.shape)
  dv = jnp.moveaxis(dv, 0, 2).reshape(v.shape)
  return dq, dk, dv, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def logits_bytes(q_shape, k_shape) -> int:
  """Bytes of the float32 [batch, heads, q_len, kv_len] logits the plain kernel builds."""
  return 4 * q_shape[0] * q_shape[2] * q_shape[1] * k_shape[1]

