"""Pure attention kernels: dot-product and L2 (distance) attention.

No Flax here: plain functions of arrays that work under `jax.jit`, `jax.vmap` and
`jax.grad`, on any XLA backend.

Shapes (the layout of `jax.nn.dot_product_attention`):
  q     [batch, q_len, heads, head_dim]
  k     [batch, kv_len, heads, head_dim]
  v     [batch, kv_len, heads, v_dim]
  mask  boolean, broadcastable to [batch, heads, q_len, kv_len]; True where a query may
        attend to a key.
  out   [batch, q_len, heads, v_dim], in the dtype of `v`.

Logits and softmax are computed in float32 whatever the input dtype. A query row that may
attend to no key returns zeros (never NaN).

L2 attention uses the identity  -||q - k||^2 = 2 q.k - ||q||^2 - ||k||^2.  The ||q||^2 term
is constant along a softmax row and cancels, so the logits are `scale * (2 q.k - ||k||^2)`:
dot-product attention with a per-key bias, computed as one matmul of vectors augmented by
one coordinate, with no [..., q_len, kv_len, head_dim] intermediate.

The bias form cancels badly when q and k share a large offset (float32), so q and k are
first centred by a common vector c per (batch, head): ||q - k|| = ||(q - c) - (k - c)||, exact
for any c. By default c is the mean key over the key axis (masked keys included, so that c
does not depend on the mask). Callers that cache the keys' squared norms (decoders) pass the
centre they used with them: `k_sqnorm = key_sqnorm(k, k_centre)`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array


def _default_scale(head_dim: int, scale: float | None) -> float:
  return 1.0 / math.sqrt(head_dim) if scale is None else scale


def _check_shapes(q: Array, k: Array, v: Array) -> None:
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(
        "attention expects q, k, v of rank 4 [batch, length, heads, dim]; got shapes "
        f"{q.shape}, {k.shape}, {v.shape}")
  if q.shape[-1] != k.shape[-1] or q.shape[2] != k.shape[2] or k.shape[:3] != v.shape[:3]:
    raise ValueError(
        "attention shapes do not agree: q [b, q_len, h, d], k [b, kv_len, h, d], "
        f"v [b, kv_len, h, v_dim] expected; got {q.shape}, {k.shape}, {v.shape}")


def masked_softmax_attend(logits: Array, v: Array, mask: Array | None) -> Array:
  """Softmax over the last axis of float32 `logits` [b, h, q, k], then weights @ v.

  Rows with no allowed key give zero weights, hence zero output.
  """
  if mask is not None:
    logits = jnp.where(mask, logits, -jnp.inf)
  row_max = jnp.max(logits, axis=-1, keepdims=True)
  row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
  weights = jnp.exp(logits - row_max)
  denom = jnp.sum(weights, axis=-1, keepdims=True)
  weights = weights / jnp.where(denom > 0, denom, 1.0)
  out = jnp.einsum("bhqk,bkhd->bqhd", weights, v.astype(jnp.float32))
  return out.astype(v.dtype)


def dot_product_logits(q: Array, k: Array, *, scale: float | None = None) -> Array:
  """float32 logits `scale * q.k`, shape [batch, heads, q_len, kv_len]."""
  s = _default_scale(q.shape[-1], scale)
  # Scaling q ([.., q_len, d]) is cheaper than scaling the logits ([.., q_len, kv_len]).
  return jnp.einsum("bqhd,bkhd->bhqk", s * q.astype(jnp.float32), k.astype(jnp.float32))


def key_centre(k: Array) -> Array:
  """Mean key per (batch, head) over all keys, float32 [batch, 1, heads, head_dim]."""
  return jnp.mean(k.astype(jnp.float32), axis=1, keepdims=True)


def key_sqnorm(k: Array, centre: Array) -> Array:
  """Squared norms ||k_j - centre||^2 in float32, shape [batch, kv_len, heads] (cacheable).

  `centre` broadcasts to [batch, 1, heads, head_dim] (e.g. `key_centre(k)`); pass the same
  one to `l2_logits` as `k_centre`.
  """
  kc = k.astype(jnp.float32) - jax.lax.stop_gradient(centre.astype(jnp.float32))
  return jnp.sum(kc * kc, axis=-1)


def l2_logits(q: Array, k: Array, *, scale: float | None = None,
              k_sqnorm: Array | None = None, k_centre: Array | None = None) -> Array:
  """float32 logits equal to `-scale * ||q - k||^2` up to a per-row constant.

  Shape [batch, heads, q_len, kv_len]. q and k are centred by `k_centre` (default
  `key_centre(k)`), a constant for gradients: any common vector leaves the logits exact.
  `k_sqnorm` ([batch, kv_len, heads]) may be passed when it is already known, e.g. from a
  decoding cache; it must be `key_sqnorm(k, k_centre)`, so `k_centre` is then required.

  One matmul of augmented vectors, [2 s q, -s] . [k, ||k||^2] = s (2 q.k - ||k||^2): the
  per-key bias and its gradient ride along in the matmul instead of costing an extra pass
  over the [q_len, kv_len] logits (measured by scripts/bench_attention.py).
  """
  if k_sqnorm is not None and k_centre is None:
    raise ValueError("l2_logits: k_sqnorm must come with the k_centre it was computed about")
  s = _default_scale(q.shape[-1], scale)
  c = jax.lax.stop_gradient(key_centre(k) if k_centre is None else k_centre.astype(jnp.float32))
  q32, k32 = q.astype(jnp.float32) - c, k.astype(jnp.float32) - c
  if k_sqnorm is None:
    k_sqnorm = jnp.sum(k32 * k32, axis=-1)
  q_aug = jnp.concatenate([(2.0 * s) * q32, jnp.full((*q.shape[:-1], 1), -s, jnp.float32)], -1)
  k_aug = jnp.concatenate([k32, k_sqnorm.astype(jnp.float32)[..., None]], -1)
  return jnp.einsum("bqhd,bkhd->bhqk", q_aug, k_aug)


def dot_product_attention(q: Array, k: Array, v: Array, *, mask: Array | None = None,
                          scale: float | None = None) -> Array:
  """Softmax attention with logits `scale * q.k` (scale defaults to 1/sqrt(head_dim))."""
  _check_shapes(q, k, v)
  return masked_softmax_attend(dot_product_logits(q, k, scale=scale), v, mask)


def l2_attention(q: Array, k: Array, v: Array, *, mask: Array | None = None,
                 scale: float | None = None, k_sqnorm: Array | None = None,
                 k_centre: Array | None = None) -> Array:
  """Softmax attention with logits `-scale * ||q - k||^2` (scale defaults to 1/sqrt(head_dim)).

  Computed in the bias form `scale * (2 q.k - ||k||^2)` after centring q and k; see the
  module docstring and `l2_logits` (`k_sqnorm` needs the `k_centre` it was computed about).
  """
  _check_shapes(q, k, v)
  logits = l2_logits(q, k, scale=scale, k_sqnorm=k_sqnorm, k_centre=k_centre)
  return masked_softmax_attend(logits, v, mask)
