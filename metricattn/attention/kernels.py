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
attend to no key returns zeros (never NaN). float32 inputs run in float32 throughout;
bfloat16/float16 inputs (mixed precision, `LOW_PRECISION`) multiply in their own dtype with
float32 accumulation (the logits are float32), the softmax runs in float32, and its weights
are cast to v's dtype for the product with v.

L2 attention uses the identity  -||q - k||^2 = 2 q.k - ||q||^2 - ||k||^2.  The ||q||^2 term
is constant along a softmax row and cancels, so the logits are `scale * (2 q.k - ||k||^2)`:
dot-product attention with a per-key bias, computed as one matmul of vectors augmented by
one coordinate, with no [..., q_len, kv_len, head_dim] intermediate.

The bias form cancels badly when q and k share a large offset (float32), so q and k are
first centred by a common vector c per (batch, head): ||q - k|| = ||(q - c) - (k - c)||, exact
for any c. By default c is the mean key over the key axis (masked keys included, so that c
does not depend on the mask). Callers that cache the keys' squared norms (decoders) pass the
centre they used with them: `k_sqnorm = key_sqnorm(k, k_centre)`.

Implementations (`implementation=` of both kernels; all give the same values):
  "xla"        the plain kernel: the whole float32 logits [batch, heads, q_len, kv_len].
  "blockwise"  online softmax over blocks of queries and keys with a recomputing backward
               pass (`blockwise.py`): memory linear in length, pure JAX, any backend;
               it computes in float32 whatever the input dtype.
  "cudnn"      `jax.nn.dot_product_attention(implementation="cudnn")`, the fused GPU kernel
               (CUDA only; float16/bfloat16, float32 inputs run in bfloat16).
  None         `choose_implementation`: cudnn on a CUDA GPU for float16/bfloat16 inputs whose
               head size fits, blockwise when the logits would exceed LOGITS_BUDGET_BYTES,
               xla otherwise.
L2 attention is dot-product attention of its augmented vectors (`l2_augmented`) in every
implementation: one blockwise kernel and one fused kernel serve both kinds (for cudnn the
d + 1 coordinates are zero-padded to a head size it accepts).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from metricattn.attention import blockwise
from metricattn.errors import UserError

Array = jax.Array
LOW_PRECISION = (jnp.bfloat16, jnp.float16)


def _low(x: Array) -> bool:
  return x.dtype in LOW_PRECISION


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


@jax.custom_vjp
def masked_softmax(logits: Array, mask: Array | None) -> Array:
  """Softmax over the last axis of float32 `logits`, where `mask` (broadcastable bool, or
  None) allows; a row with no allowed entry gives zeros (never NaN).

  Its gradient keeps only the weights p (`jax.nn.softmax`'s rule, dlogits = p (g - sum g p)),
  not the masked logits and exponentials autodiff of the formula would keep: fewer
  [q_len, kv_len] buffers and passes in the backward (scripts/bench_attention.py --vs-jax).
  A `jax.custom_vjp`: reverse-mode only (jax.grad, jax.vjp); forward-mode (jax.jvp,
  jax.jacfwd) through the kernels is not supported, as for the blockwise kernel.
  """
  return _masked_softmax_fwd(logits, mask)[0]


def _masked_softmax_fwd(logits, mask):
  if mask is not None:
    logits = jnp.where(mask, logits, -jnp.inf)
  row_max = jnp.max(logits, axis=-1, keepdims=True)
  weights = jnp.exp(logits - jnp.where(jnp.isfinite(row_max), row_max, 0.0))
  if mask is not None:
    # exp already gives the masked entries 0; selecting them again changes no value, but it
    # steers XLA's buffer assignment: without it l2 with a mask kept one more [q_len, kv_len]
    # buffer live (1.22-1.25x jax.nn's memory; scripts/bench_attention.py --vs-jax).
    weights = jnp.where(mask, weights, 0.0)
  denom = jnp.sum(weights, axis=-1, keepdims=True)
  weights = weights / jnp.where(denom > 0, denom, 1.0)
  return weights, weights


def _masked_softmax_bwd(weights, g):
  return weights * (g - jnp.sum(g * weights, axis=-1, keepdims=True)), None


masked_softmax.defvjp(_masked_softmax_fwd, _masked_softmax_bwd)


def masked_softmax_attend(logits: Array, v: Array, mask: Array | None) -> Array:
  """Softmax over the last axis of float32 `logits` [b, h, q, k], then weights @ v.

  Rows with no allowed key give zero weights, hence zero output.
  """
  weights = masked_softmax(logits, mask)
  if _low(v):
    out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v,
                     preferred_element_type=jnp.float32)
    return out.astype(v.dtype)
  out = jnp.einsum("bhqk,bkhd->bqhd", weights, v.astype(jnp.float32))
  return out.astype(v.dtype)


def dot_product_logits(q: Array, k: Array, *, scale: float | None = None) -> Array:
  """float32 logits `scale * q.k`, shape [batch, heads, q_len, kv_len]. bfloat16/float16
  q and k are multiplied in their dtype with float32 accumulation."""
  s = _default_scale(q.shape[-1], scale)
  if _low(q) and _low(k):
    return jnp.einsum("bqhd,bkhd->bhqk", s * q, k.astype(q.dtype),
                      preferred_element_type=jnp.float32)
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


def l2_augmented(q: Array, k: Array, *, scale: float | None = None,
                 k_sqnorm: Array | None = None,
                 k_centre: Array | None = None) -> tuple[Array, Array]:
  """float32 augmented vectors `[2 s (q - c), -s]` [b, q_len, h, d + 1] and
  `[k - c, ||k - c||^2]` [b, kv_len, h, d + 1], whose dot product is the L2 logits up to a
  per-row constant (see `l2_logits`); every implementation of `l2_attention` uses them
  (cast to q's dtype when that is bfloat16/float16)."""
  if k_sqnorm is not None and k_centre is None:
    raise ValueError("l2_logits: k_sqnorm must come with the k_centre it was computed about")
  s = _default_scale(q.shape[-1], scale)
  c = jax.lax.stop_gradient(key_centre(k) if k_centre is None else k_centre.astype(jnp.float32))
  q32, k32 = q.astype(jnp.float32) - c, k.astype(jnp.float32) - c
  if k_sqnorm is None:
    k_sqnorm = jnp.sum(k32 * k32, axis=-1)
  q_aug = jnp.concatenate([(2.0 * s) * q32, jnp.full((*q.shape[:-1], 1), -s, jnp.float32)], -1)
  k_aug = jnp.concatenate([k32, k_sqnorm.astype(jnp.float32)[..., None]], -1)
  return q_aug, k_aug


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
  q_aug, k_aug = l2_augmented(q, k, scale=scale, k_sqnorm=k_sqnorm, k_centre=k_centre)
  if _low(q):
    return dot_product_logits(q_aug.astype(q.dtype), k_aug.astype(q.dtype), scale=1.0)
  return jnp.einsum("bqhd,bkhd->bhqk", q_aug, k_aug)


# ---------------------------------------------------------------- implementations

IMPLEMENTATIONS = ("xla", "blockwise", "cudnn")

# `implementation=None` switches from the plain kernel to the blockwise one when the float32
# logits [batch, heads, q_len, kv_len] of one call would exceed this many bytes. The plain
# kernel's forward+backward holds a few arrays of that size (logits, weights, their
# gradients), so its peak is several times this; 256 MiB is batch 1, 8 heads at length
# 2,896. Under `jax.vmap` (vmapped seeds) the budget applies per vmapped instance.
LOGITS_BUDGET_BYTES = 256 * 2**20

# Head sizes cuDNN's fused (flash) attention accepts: a multiple of 8 up to 128 (256 on
# Hopper and later; `implementation=None` keeps to 128).
CUDNN_HEAD_MULTIPLE = 8
CUDNN_MAX_HEAD_DIM = 128


def check_implementation(implementation: str | None) -> str | None:
  """`implementation` itself if it is None or one of IMPLEMENTATIONS, else a UserError."""
  if implementation is not None and implementation not in IMPLEMENTATIONS:
    raise UserError(f"unknown attention implementation {implementation!r}; allowed: "
                    f"{', '.join(IMPLEMENTATIONS)} or None (chosen per call)")
  return implementation


def _on_cuda_gpu() -> bool:
  return jax.default_backend() == "gpu" and "cuda" in jax.devices()[0].client.platform_version


def _cudnn_head_dim(dims: tuple[int, ...]) -> int:
  """The head size the fused kernel gets: the largest of `dims` rounded up to a multiple of 8."""
  return -(-max(dims) // CUDNN_HEAD_MULTIPLE) * CUDNN_HEAD_MULTIPLE


def choose_implementation(q: Array, k: Array, v: Array, mask: Array | None,
                          qk_dim: int) -> str:
  """What `implementation=None` runs: "cudnn" on a CUDA GPU for float16/bfloat16 inputs whose
  (augmented, padded) head size is at most 128 and, with a mask, even lengths (cuDNN's
  condition for a mask in training); else "blockwise" when the logits would exceed
  LOGITS_BUDGET_BYTES; else "xla"."""
  low = all(a.dtype in (jnp.float16, jnp.bfloat16) for a in (q, k, v))
  even = q.shape[1] % 2 == 0 and k.shape[1] % 2 == 0
  if (low and _on_cuda_gpu() and (mask is None or even)
      and _cudnn_head_dim((qk_dim, v.shape[-1])) <= CUDNN_MAX_HEAD_DIM):
    return "cudnn"
  if blockwise.logits_bytes(q.shape, k.shape) > LOGITS_BUDGET_BYTES:
    return "blockwise"
  return "xla"


def cudnn_attention(q: Array, k: Array, v: Array, mask: Array | None, scale: float) -> Array:
  """`jax.nn.dot_product_attention(implementation="cudnn")` with logits `scale * q.k`.

  q and k are zero-padded to one head size the fused kernel accepts (a multiple of 8; the
  padding adds nothing to q.k), and v to the same size (the output is cut back). float32
  inputs run in bfloat16 (cuDNN's fused attention takes float16/bfloat16; it accumulates in
  float32), and the output is cast back to the dtype of `v`. Rows with no allowed key give
  zeros, as in the other implementations.
  """
  if not _on_cuda_gpu():
    raise UserError(f"attention implementation 'cudnn' needs a CUDA GPU; this is "
                    f"{jax.default_backend()}: use xla or blockwise")
  dtype = q.dtype if q.dtype in (jnp.float16, jnp.bfloat16) else jnp.bfloat16
  dv = v.shape[-1]
  size = _cudnn_head_dim((q.shape[-1], dv))
  pad = lambda x: jnp.pad(x.astype(dtype), ((0, 0),) * 3 + ((0, size - x.shape[-1]),))
  m = None
  if mask is not None:
    m = jnp.asarray(mask, bool)
    m = m.reshape((1,) * (4 - m.ndim) + m.shape)
    # cuDNN takes the mask as a bias; its batch and head axes may broadcast, not its lengths.
    m = jnp.broadcast_to(m, (*m.shape[:2], q.shape[1], k.shape[1]))
  out = jax.nn.dot_product_attention(pad(q), pad(k), pad(v), mask=m, scale=scale,
                                     implementation="cudnn")[..., :dv]
  if m is not None:
    nonempty = jnp.any(m, axis=-1)                          # [b|1, h|1, q_len]
    out = jnp.where(jnp.swapaxes(nonempty, 1, 2)[..., None], out, 0)
  return out.astype(v.dtype)


def _attend(q_logit: Array, k_logit: Array, v: Array, mask: Array | None, scale: float,
            implementation: str) -> Array:
  """Softmax attention with logits `scale * q_logit . k_logit` by `implementation`."""
  if implementation == "blockwise":
    return blockwise.blockwise_attention(scale * q_logit.astype(jnp.float32), k_logit, v, mask)
  if implementation == "cudnn":
    return cudnn_attention(q_logit, k_logit, v, mask, scale)
  return masked_softmax_attend(dot_product_logits(q_logit, k_logit, scale=scale), v, mask)


def dot_product_attention(q: Array, k: Array, v: Array, *, mask: Array | None = None,
                          scale: float | None = None,
                          implementation: str | None = None) -> Array:
  """Softmax attention with logits `scale * q.k` (scale defaults to 1/sqrt(head_dim)).

  `implementation`: "xla" (the plain kernel: the whole logits), "blockwise" (memory linear in
  length), "cudnn" (the fused GPU kernel), or None to choose (`choose_implementation`).
  """
  _check_shapes(q, k, v)
  impl = check_implementation(implementation) or choose_implementation(q, k, v, mask,
                                                                       q.shape[-1])
  return _attend(q, k, v, mask, _default_scale(q.shape[-1], scale), impl)


def l2_attention(q: Array, k: Array, v: Array, *, mask: Array | None = None,
                 scale: float | None = None, k_sqnorm: Array | None = None,
                 k_centre: Array | None = None, implementation: str | None = None) -> Array:
  """Softmax attention with logits `-scale * ||q - k||^2` (scale defaults to 1/sqrt(head_dim)).

  Computed in the bias form `scale * (2 q.k - ||k||^2)` after centring q and k; see the
  module docstring and `l2_logits` (`k_sqnorm` needs the `k_centre` it was computed about).
  Every implementation (see `dot_product_attention`) attends with the same augmented
  vectors (`l2_augmented`), so blockwise and fused L2 are the dot-product kernels.
  """
  _check_shapes(q, k, v)
  impl = check_implementation(implementation) or choose_implementation(q, k, v, mask,
                                                                       q.shape[-1] + 1)
  q_aug, k_aug = l2_augmented(q, k, scale=scale, k_sqnorm=k_sqnorm, k_centre=k_centre)
  if _low(q):  # mixed precision: the matmul in q's dtype (the vectors are built in float32)
    q_aug, k_aug = q_aug.astype(q.dtype), k_aug.astype(q.dtype)
  return _attend(q_aug, k_aug, v, mask, 1.0, impl)
