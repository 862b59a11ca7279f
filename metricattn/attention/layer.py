"""The project's one multi-head attention module (Flax NNX), whose kind is a config string.

Kinds (paper notes, section 1):
  softmax  logits  scale * (W_Q x) . (W_K y)                separate query and key projections
  l2       logits -scale * ||P x - P y||^2                  one projection P for query and key
  metric   logits -scale * ||g(P x) - g(P y)||^2            g(u) = u + W2 tanh(W1 u + b1) + b2

With W2 = 0 and b2 = 0 the metric kind is exactly the l2 kind. P maps to
`num_heads * head_dim`; g acts on that whole vector, which is then split into heads.
In cross-attention (`cross=True`: queries from x, keys and values from y) the l2 and metric
kinds give the query and key sides their own P and share g.

The value and output projections are optional: the paper's IPN propagates `H_new = S H_old`
without them. Without a value projection every head averages the full input features and the
heads' outputs are averaged, so the output width equals the input width.

Value maps (`value_map`):
  linear     v = y W_V (a learned value projection), or v = y without one: the default.
  lipschitz  Kim, Papamakarios & Mnih (ICML 2021), "The Lipschitz Constant of
             Self-Attention", L2-MHA: l2 self-attention only (queries and keys tied,
             W_K = W_Q, as the l2 kind always is). Head h averages x A_h with
             A_h = W_Q,h W_Q,h^T / sqrt(d_h) (W_Q,h the head's [in, d_h] block of the
             query projection's kernel, d_h the head size, their D/H), then applies the
             head's block of W_V: f_h(X) = P_h X A_h W_V,h with
             P_h,ij = softmax_j(-||x_i W_Q,h - x_j W_Q,h||^2 / sqrt(d_h)) (the default
             scale), and F(X) = [f_1(X), ..., f_H(X)] W_O. Without a value projection
             (the IPN), W_V,h is the identity: f_h(X) = P_h X A_h, heads averaged as above.
             The bias of P (the query projection's) cancels in the distance; A_h uses its
             kernel only. The value map makes the layer Lipschitz (their Theorem 3.2).
`VARIANTS` names a kind with a non-default value map for config arguments and the
registry's grids: `l2_lipschitz` is kind l2 with value map lipschitz.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from metricattn.attention import kernels as attn_lib
from metricattn.errors import UserError

KINDS = ("softmax", "l2", "metric")
VALUE_MAPS = ("linear", "lipschitz")
VARIANTS = {"l2_lipschitz": ("l2", "lipschitz")}  # name -> (kind, value map)


def check_kind(kind: str) -> str:
  if kind not in KINDS:
    raise UserError(f"unknown attention kind {kind!r}; allowed: {', '.join(KINDS)}")
  return kind


def parse_attention(name: str) -> tuple[str, str]:
  """A config's attention name -> (kind, value map): a kind has the linear value map, a
  name in VARIANTS its own."""
  if name in VARIANTS:
    return VARIANTS[name]
  if name not in KINDS:
    raise UserError(f"unknown attention kind {name!r}; allowed: {', '.join([*KINDS, *VARIANTS])}")
  return name, "linear"


def attention_name(model_config) -> str:
  """The attention name of a `config.model` (inverse of parse_attention): its kind, or the
  variant for a non-default value map, e.g. l2_lipschitz."""
  key = (model_config.attention, model_config.get("value_map", "linear"))
  return next((name for name, v in VARIANTS.items() if v == key), model_config.attention)


def check_value_map(value_map: str, kind: str, cross: bool = False) -> str:
  if value_map not in VALUE_MAPS:
    raise UserError(f"unknown value map {value_map!r}; allowed: {', '.join(VALUE_MAPS)}")
  if value_map == "lipschitz" and (kind != "l2" or cross):
    raise UserError(f"value_map=lipschitz needs l2 self-attention (Kim et al. 2021); got "
                    f"{'cross-attention' if cross else 'kind ' + repr(kind)}")
  return value_map


def split_heads(x: jax.Array, num_heads: int) -> jax.Array:
  """[..., len, heads * d] -> [..., len, heads, d]."""
  return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


class MetricMLP(nnx.Module):
  """The residual tanh MLP g(u) = u + W2 tanh(W1 u + b1) + b2 of metric-attention."""

  def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, dtype=None):
    self.hidden = nnx.Linear(dim, hidden, dtype=dtype, rngs=rngs)
    self.out = nnx.Linear(hidden, dim, dtype=dtype, rngs=rngs)

  def __call__(self, u: jax.Array) -> jax.Array:
    return u + self.out(jnp.tanh(self.hidden(u)))


class Attention(nnx.Module):
  """Multi-head attention of kind `softmax`, `l2` or `metric`.

  Args:
    in_features: width of the query input x.
    kind: attention kind (see module docstring).
    num_heads: number of heads.
    qk_features: total query/key width (`num_heads * head_dim`); must divide by num_heads.
    kv_features: width of the key/value input y for cross-attention (defaults to in_features).
    v_features: total value width, or None for no value projection (v = y, see above).
    out_features: output width, or None for no output projection.
    d_mlp: hidden width of the metric MLP g (metric kind only).
    scale: logit scale; None means 1/sqrt(head_dim). 1.0 is the paper's Algorithm 1.
    cross: True for cross-attention (separate query/key projections for l2 and metric).
    use_bias: bias in the projections.
    implementation: the kernels' implementation, "xla" | "blockwise" | "cudnn", or None to
      choose per call (see attention/kernels.py).
    value_map: "linear" or "lipschitz" (l2 self-attention only; see module docstring).
    dtype: the computation dtype of the projections and the metric MLP (parameters stay
      float32), e.g. jnp.bfloat16 for mixed precision; None (float32 inputs run in float32).
      The kernels take their inputs' dtype (attention/kernels.py: float32 softmax).
  """

  def __init__(self, in_features: int, *, kind: str, num_heads: int, qk_features: int,
               rngs: nnx.Rngs, kv_features: int | None = None,
               v_features: int | None = None, out_features: int | None = None,
               d_mlp: int = 0, scale: float | None = None, cross: bool = False,
               use_bias: bool = True, implementation: str | None = None,
               value_map: str = "linear", dtype=None):
    self.kind = check_kind(kind)
    self.implementation = attn_lib.check_implementation(implementation)
    self.value_map = check_value_map(value_map, kind, cross)
    if num_heads < 1 or qk_features % num_heads:
      raise UserError(
          f"attention width {qk_features} does not divide into {num_heads} heads; "
          "choose qk_features a multiple of num_heads")
    if v_features is not None and v_features % num_heads:
      raise UserError(
          f"value width {v_features} does not divide into {num_heads} heads; "
          "choose v_features a multiple of num_heads")
    if kind == "metric" and d_mlp < 1:
      raise UserError("metric attention needs d_mlp >= 1 (hidden width of its MLP g)")
    kv_features = kv_features or in_features
    self.num_heads = num_heads
    self.scale = scale
    self.dtype = dtype
    linear = lambda i, o: nnx.Linear(i, o, use_bias=use_bias, dtype=dtype, rngs=rngs)
    self.q_proj = linear(in_features, qk_features)
    tied = kind != "softmax" and not cross
    # l2/metric self-attention: one P for both sides (the same module object).
    self.k_proj = self.q_proj if tied else linear(kv_features, qk_features)
    self.g = MetricMLP(qk_features, d_mlp, rngs=rngs, dtype=dtype) if kind == "metric" else None
    self.v_proj = linear(kv_features, v_features) if v_features else None
    v_width = v_features or kv_features
    self.out_proj = linear(v_width, out_features) if out_features else None

  # The pieces, exposed so that decoders can cache keys and values.
  def queries(self, x: jax.Array) -> jax.Array:
    """[b, q_len, in] -> [b, q_len, heads, head_dim]."""
    q = self.q_proj(x)
    return split_heads(self.g(q) if self.g is not None else q, self.num_heads)

  def keys(self, y: jax.Array) -> jax.Array:
    """[b, kv_len, kv_in] -> [b, kv_len, heads, head_dim]."""
    k = self.k_proj(y)
    return split_heads(self.g(k) if self.g is not None else k, self.num_heads)

  def values(self, y: jax.Array) -> jax.Array:
    """[b, kv_len, kv_in] -> [b, kv_len, heads, v_dim]."""
    if self.value_map == "lipschitz":
      return self.lipschitz_values(y)
    if self.v_proj is not None:
      return split_heads(self.v_proj(y), self.num_heads)
    return jnp.broadcast_to(y[..., None, :], (*y.shape[:-1], self.num_heads, y.shape[-1]))

  def lipschitz_values(self, y: jax.Array) -> jax.Array:
    """Kim et al.'s values y A_h (W_V,h): [..., kv_len, in] -> [..., kv_len, heads, v_dim],
    as (y W_Q,h) W_Q,h^T / sqrt(d_h), never forming the [in, in] matrix A_h."""
    cast = lambda a: a if self.dtype is None else a.astype(self.dtype)  # mixed precision
    w = cast(split_heads(self.q_proj.kernel[...], self.num_heads))   # [in, heads, d_h]
    y = cast(y)
    u = jnp.einsum("...d,dhe->...he", y, w)
    xa = cast(jnp.einsum("...he,dhe->...hd", u, w) / jnp.sqrt(jnp.float32(w.shape[-1])))
    if self.v_proj is None:
      return xa
    wv = cast(split_heads(self.v_proj.kernel[...], self.num_heads))  # [in, heads, v_dim]
    v = jnp.einsum("...hd,dhe->...he", xa, wv)
    if self.v_proj.bias is not None:
      v = v + cast(split_heads(self.v_proj.bias[...], self.num_heads))
    return v

  def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None,
             k_sqnorm: jax.Array | None = None,
             k_centre: jax.Array | None = None) -> jax.Array:
    """Kernel plus output projection: [b, q_len, heads, v_dim] -> [b, q_len, out]."""
    if self.kind == "softmax":
      o = attn_lib.dot_product_attention(q, k, v, mask=mask, scale=self.scale,
                                         implementation=self.implementation)
    else:
      o = attn_lib.l2_attention(q, k, v, mask=mask, scale=self.scale, k_sqnorm=k_sqnorm,
                                k_centre=k_centre, implementation=self.implementation)
    return self.combine(o)

  def combine(self, o: jax.Array) -> jax.Array:
    """Heads to features: [..., heads, v_dim] -> [..., out] (mean of the heads without a value
    projection, else concatenated), then the output projection."""
    if self.v_proj is None:
      o = jnp.mean(o, axis=-2)
    else:
      o = o.reshape(*o.shape[:-2], -1)
    return self.out_proj(o) if self.out_proj is not None else o

  def graph(self, x: jax.Array, receivers: jax.Array, senders: jax.Array) -> jax.Array:
    """Graph-masked self-attention over one graph, with no [nodes, nodes] array: x [nodes, in],
    receivers/senders int32 [edges] (node receivers[e] attends to node senders[e]) ->
    [nodes, out]. Same projections and logits as __call__ with the adjacency as mask."""
    from metricattn.attention.graph import graph_attention
    q, k, v = self.queries(x[None])[0], self.keys(x[None])[0], self.values(x[None])[0]
    o = graph_attention(q, k, v, receivers, senders, distance=self.kind != "softmax",
                        scale=self.scale)
    return self.combine(o)

  def __call__(self, x: jax.Array, y: jax.Array | None = None,
               mask: jax.Array | None = None) -> jax.Array:
    """x [b, q_len, in], y [b, kv_len, kv_in] (defaults to x), mask -> [b, q_len, out]."""
    y = x if y is None else y
    return self.attend(self.queries(x), self.keys(y), self.values(y), mask)
