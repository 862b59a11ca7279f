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

What differs between kinds is decided here and nowhere else: `KIND_SPECS` (distance or dot
logits, one tied projection for queries and keys, the metric MLP g), read through the layer
(`Attention.distance`, `shares_qk_projection`, `logits`, and the incremental decoding cache:
`init_cache`, `decode_step`, `memory_cache`, `attend_memory`). Model families build their
layers from their `config.model` with `AttentionOptions.from_config` (kind and value map,
scale, kernel implementation, dtype), so an option reaches every family at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from metricattn.attention import kernels as attn_lib
from metricattn.errors import UserError


@dataclasses.dataclass(frozen=True)
class KindSpec:
  """What an attention kind is made of."""
  distance: bool    # logits -scale ||q - k||^2 (the l2 kernels), else scale q . k
  tied: bool        # self-attention: one projection P for queries and keys
  metric_mlp: bool  # the MLP g after the projection


KIND_SPECS = {
    "softmax": KindSpec(distance=False, tied=False, metric_mlp=False),
    "l2": KindSpec(distance=True, tied=True, metric_mlp=False),
    "metric": KindSpec(distance=True, tied=True, metric_mlp=True),
    # A control beyond the paper: softmax's dot-product logits of separate query and key
    # projections, each followed by the same MLP g as metric-attention's. Against `metric` it
    # separates "a learned nonlinearity of q and k" from "a distance similarity".
    "softmax_g": KindSpec(distance=False, tied=False, metric_mlp=True),
}
KINDS = ("softmax", "l2", "metric")            # the paper's three
CONTROL_KINDS = ("softmax_g",)
VALUE_MAPS = ("linear", "lipschitz")
VARIANTS = {"l2_lipschitz": ("l2", "lipschitz")}  # name -> (kind, value map)


def check_kind(kind: str) -> str:
  if kind not in KIND_SPECS:
    raise UserError(f"unknown attention kind {kind!r}; allowed: {', '.join(KIND_SPECS)}")
  return kind


def parse_attention(name: str) -> tuple[str, str]:
  """A config's attention name -> (kind, value map): a kind has the linear value map, a
  name in VARIANTS its own."""
  if name in VARIANTS:
    return VARIANTS[name]
  if name not in KIND_SPECS:
    raise UserError(f"unknown attention kind {name!r}; allowed: "
                    f"{', '.join([*KIND_SPECS, *VARIANTS])}")
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


# model.dtype -> the `dtype=` of the Flax layers (None: float32 in, float32 out, as before
# the field existed).
DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def compute_dtype(model_config):
  """The Flax layers' `dtype=` for `model_config.dtype`: None (float32, also for configs
  without the field: runs made before it) or jnp.bfloat16; UserError for another name."""
  name = model_config.get("dtype", "float32")
  if name not in DTYPES:
    raise UserError(f"unknown model.dtype {name!r}; allowed: {', '.join(DTYPES)}")
  return DTYPES[name]


@dataclasses.dataclass(frozen=True)
class AttentionOptions:
  """The options every attention layer of a model shares, read from its `config.model` by
  `from_config`, the one place for every model family; `layer` builds an `Attention` with
  them and the family's sizes. Defaults (fields a config lacks) are the behaviour before
  the field existed."""
  kind: str
  value_map: str = "linear"
  scale: float | None = None
  implementation: str | None = None  # "xla" | "blockwise" | "cudnn"; None chooses per call
  dtype: Any = None                  # the layers' computation dtype: None or jnp.bfloat16

  # the config.model fields read by from_config
  CONFIG_FIELDS: ClassVar[tuple[str, ...]] = ("attention", "value_map", "scale",
                                              "implementation", "dtype")

  def __post_init__(self):  # the errors of a bad option also for a model with no attention
    check_kind(self.kind)
    check_value_map(self.value_map, self.kind)
    attn_lib.check_implementation(self.implementation)

  @classmethod
  def from_config(cls, model_config) -> AttentionOptions:
    """`attention` a kind or a variant (VARIANTS: l2_lipschitz), `value_map`, `scale`,
    `implementation` and `dtype` ("float32" | "bfloat16") of a `config.model`."""
    m = model_config
    kind, value_map = parse_attention(m.attention)
    if value_map == "linear":
      value_map = m.get("value_map", "linear")
    return cls(kind, value_map, scale=m.get("scale"), implementation=m.get("implementation"),
               dtype=compute_dtype(m))

  def layer(self, in_features: int, *, rngs: nnx.Rngs, cross: bool = False,
            **sizes) -> Attention:
    """An `Attention` with these options; `sizes` are its other arguments (num_heads,
    qk_features, v_features, ...). Cross-attention always has the linear value map."""
    return Attention(in_features, kind=self.kind, scale=self.scale,
                     value_map="linear" if cross else self.value_map,
                     implementation=self.implementation, dtype=self.dtype, cross=cross,
                     rngs=rngs, **sizes)


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
    spec = KIND_SPECS[kind]
    if spec.metric_mlp and d_mlp < 1:
      raise UserError(f"{kind} attention needs d_mlp >= 1 (hidden width of its MLP g)")
    kv_features = kv_features or in_features
    self.num_heads = num_heads
    self.scale = scale
    self.dtype = dtype
    linear = lambda i, o: nnx.Linear(i, o, use_bias=use_bias, dtype=dtype, rngs=rngs)
    self.q_proj = linear(in_features, qk_features)
    # l2/metric self-attention: one P for both sides (the same module object).
    self.k_proj = (self.q_proj if spec.tied and not cross
                   else linear(kv_features, qk_features))
    self.g = MetricMLP(qk_features, d_mlp, rngs=rngs, dtype=dtype) if spec.metric_mlp else None
    self.v_proj = linear(kv_features, v_features) if v_features else None
    v_width = v_features or kv_features
    self.out_proj = linear(v_width, out_features) if out_features else None

  @property
  def distance(self) -> bool:
    """True for distance logits -scale ||q - k||^2 (l2, metric), False for scale q . k."""
    return KIND_SPECS[self.kind].distance

  @property
  def shares_qk_projection(self) -> bool:
    """True when queries and keys come from one projection (l2/metric self-attention)."""
    return self.k_proj is self.q_proj

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
    if self.distance:
      o = attn_lib.l2_attention(q, k, v, mask=mask, scale=self.scale, k_sqnorm=k_sqnorm,
                                k_centre=k_centre, implementation=self.implementation)
    else:
      o = attn_lib.dot_product_attention(q, k, v, mask=mask, scale=self.scale,
                                         implementation=self.implementation)
    return self.combine(o)

  def logits(self, q: jax.Array, k: jax.Array) -> jax.Array:
    """The kind's float32 logits [b, heads, q_len, kv_len] of q and k (no mask)."""
    fn = attn_lib.l2_logits if self.distance else attn_lib.dot_product_logits
    return fn(q, k, scale=self.scale)

  # Incremental decoding. A cache is a dict of arrays with the examples on axis 0 (beam
  # search reorders it): keys "k" [b, len, heads, head_dim] and values "v" [b, len, heads,
  # v_dim]; for distance logits also the keys' squared norms "k_sq" [b, len, heads] about a
  # centre, kept with them: the mean key "k_c" [b, 1, heads, head_dim] (the kernel's own) in a
  # memory cache, the first key in a self-attention cache filled position by position.
  def init_cache(self, batch: int, max_len: int) -> dict:
    """Self-attention cache for `max_len` positions, all zeros: keys and values in the
    activations' dtype, the squared norms in float32."""
    heads = self.num_heads
    k_dim = self.q_proj.out_features // heads
    v_dim = (self.v_proj.out_features // heads if self.v_proj is not None
             else self.q_proj.in_features)
    dtype = self.dtype or jnp.float32
    cache = {"k": jnp.zeros((batch, max_len, heads, k_dim), dtype),
             "v": jnp.zeros((batch, max_len, heads, v_dim), dtype)}
    if self.distance:
      cache["k_sq"] = jnp.zeros((batch, max_len, heads), jnp.float32)
    return cache

  def decode_step(self, x: jax.Array, t: jax.Array, cache: dict) -> tuple[jax.Array, dict]:
    """Causal self-attention of position t: x [b, 1, in] -> ([b, 1, out], the cache with
    position t written); attends to positions 0..t."""
    k_new = self.keys(x)
    put = lambda buf, new: jax.lax.dynamic_update_slice_in_dim(buf, new.astype(buf.dtype), t, 1)
    cache = dict(cache, k=put(cache["k"], k_new), v=put(cache["v"], self.values(x)))
    centre = None
    if self.distance:  # norms about a centre fixed per sequence: the first key (t = 0)
      centre = cache["k"][:, :1]
      cache["k_sq"] = put(cache["k_sq"], attn_lib.key_sqnorm(k_new, centre))
    mask = (jnp.arange(cache["k"].shape[1]) <= t)[None, None, None, :]
    y = self.attend(self.queries(x), cache["k"], cache["v"], mask,
                    k_sqnorm=cache.get("k_sq"), k_centre=centre)
    return y, cache

  def memory_cache(self, y: jax.Array) -> dict:
    """Cache of a fixed key/value input y [b, kv_len, kv_in] (a decoder's encoder memory)."""
    k = self.keys(y)
    cache = {"k": k, "v": self.values(y)}
    if self.distance:
      cache["k_c"] = attn_lib.key_centre(k)
      cache["k_sq"] = attn_lib.key_sqnorm(k, cache["k_c"])
    return cache

  def attend_memory(self, x: jax.Array, cache: dict,
                    mask: jax.Array | None = None) -> jax.Array:
    """Queries of x [b, q_len, in] over a `memory_cache` -> [b, q_len, out]."""
    return self.attend(self.queries(x), cache["k"], cache["v"], mask,
                       k_sqnorm=cache.get("k_sq"), k_centre=cache.get("k_c"))

  def combine(self, o: jax.Array) -> jax.Array:
    """Heads to features: [..., heads, v_dim] -> [..., out] (mean of the heads without a value
    projection, else concatenated), then the output projection."""
    if self.v_proj is None:
      o = jnp.mean(o, axis=-2)
    else:
      o = o.reshape(*o.shape[:-2], -1)
    return self.out_proj(o) if self.out_proj is not None else o

  def graph(self, x: jax.Array, receivers: jax.Array, senders: jax.Array, *,
            graph_implementation: str | None = None, presorted: bool = False) -> jax.Array:
    """Graph-masked self-attention over one graph, with no [nodes, nodes] array: x [nodes, in],
    and the graph as an edge list, receivers/senders int32 [edges] (node receivers[e] attends
    to node senders[e]), or as neighbour lists [nodes, max_degree] padded with -1
    (`attention.neighbour_lists`, the fast form for bounded degree) -> [nodes, out]. Same
    projections and logits as __call__ with the adjacency as mask; `graph_implementation`
    is `graph_attention`'s `implementation` (None: neighbour lists run "ell", see
    attention/graph.py) and `presorted` its promise that an edge list is sorted and
    distinct (so that it is not sorted again inside jit). With one projection for queries and
    keys (l2, metric) the keys are the queries, computed once (since 2026-12-02; before,
    twice: the same values, gradients rounded differently)."""
    from metricattn.attention.graph import graph_attention
    if self.implementation is not None:
      raise UserError("graph-masked attention takes no dense-kernel implementation (its "
                      "kernels are in attention/graph.py, chosen by the graph's form); got "
                      f"implementation {self.implementation!r}: leave model.implementation "
                      "unset")
    q = self.queries(x[None])[0]
    # One projection (and g) for both sides: the keys are the queries, computed once, so
    # that the backward pass runs through P and g once (with dq + dk), not twice.
    k = q if self.shares_qk_projection else self.keys(x[None])[0]
    v = self.values(x[None])[0]
    o = graph_attention(q, k, v, receivers, senders, distance=self.distance,
                        scale=self.scale, implementation=graph_implementation,
                        presorted=presorted)
    return self.combine(o)

  def __call__(self, x: jax.Array, y: jax.Array | None = None,
               mask: jax.Array | None = None) -> jax.Array:
    """x [b, q_len, in], y [b, kv_len, kv_in] (defaults to x), mask -> [b, q_len, out]."""
    y = x if y is None else y
    return self.attend(self.queries(x), self.keys(y), self.values(y), mask)
