"""Encoder-decoder Transformer, Flax NNX.

Every attention block is the project's `Attention` of the configured kind: encoder
self-attention, causal decoder self-attention and decoder-encoder cross-attention (for l2 and
metric, cross-attention gives queries and keys their own projection and shares the metric MLP).
Only the score function changes between kinds, as in the paper's Multi30k experiment.

Token id 0 is padding everywhere: padded source positions are never attended to. Decoder
self-attention is causal only (right-padded targets never reach a real position's query).

`config.model.name` "transformer": Transformer(src, tgt_in) -> logits [batch, tgt_len,
tgt_vocab] (dataset info: src_vocab_size, tgt_vocab_size). It is pure:
`model(..., train=bool, rngs=key_or_None)`; dropout draws from the jax key `rngs` (required
when training with dropout > 0), each dropout site a fresh fold of it.

config.model fields, `h` in the code (the paper's values, from configs/common.py; see
../shared/paper.md):
  attention         "softmax" | "l2" | "metric"                          "metric"
  num_layers        encoder layers, and decoder layers                    6
  num_heads         heads of every attention block                        8
  d_model           residual width                                        512
  qk_dim            total query/key width d_Q (num_heads * head_dim)      512
  d_mlp             hidden width of the metric MLP (metric kind only)     512
  d_ff              feed-forward hidden width                             2048
  dropout           on embeddings, sublayer outputs, FFN hidden           0.1
  dropout_rng       "hash" (cheap bits) or "threefry" (Flax's); runs      "hash"
                    without the field: "threefry" (models/dropout.py)
  scale             attention logit scale; None = 1/sqrt(head_dim)        None
  norm              "post" (reference) or "pre" LayerNorm                 "post"
  ln_eps            LayerNorm epsilon (reference 1e-12)                   1e-12
  positions         "sinusoidal" or "learned"                             "sinusoidal"
  max_len           most positions (learned table size; length check)    256
  scale_embeddings  multiply token embeddings by sqrt(d_model)           False
  share_embeddings  one source/target embedding (needs one vocabulary)   False
  tie_output        output projection = target embedding transposed      False
  label_smoothing   read by the Translation task (tasks.py)              0.0 (reference) / 0.1
  implementation    attention kernels: "xla" | "blockwise" | "cudnn", or  None
                    None to choose per call (attention/kernels.py)
  dtype             "float32", or "bfloat16": mixed precision (below);    "float32"
                    runs without the field: "float32"

Mixed precision (`dtype` "bfloat16"): parameters (hence gradients and optimizer state) stay
float32; every Linear, Embed and LayerNorm computes in bfloat16 (Flax's `dtype=`), so
matmuls and activations are bfloat16. LayerNorm's statistics (Flax computes them in at least
float32), the attention logits (float32 accumulation) and softmax (attention/kernels.py), and
the loss (tasks.py casts the logits to float32) stay float32. "float32" is the computation
of the runs made before the field, bit for bit.

Initialisation is Flax's default (LeCun normal for Linear, variance-scaled Embed), not the
reference's Kaiming uniform.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from ml_collections import ConfigDict

from metricattn.errors import UserError
from metricattn.attention import Attention, AttentionOptions, compute_dtype
from metricattn.models.dropout import Dropout

PAD = 0
NORMS = ("post", "pre")
POSITIONS = ("sinusoidal", "learned")


def check(h: ConfigDict) -> None:
  """UserError for a bad norm, positions, dropout or dtype (the Attention layer checks the
  kind)."""
  if h.norm not in NORMS:
    raise UserError(f"unknown model.norm {h.norm!r}; allowed: {', '.join(NORMS)}")
  if h.positions not in POSITIONS:
    raise UserError(
        f"unknown model.positions {h.positions!r}; allowed: {', '.join(POSITIONS)}")
  if not 0.0 <= h.dropout < 1.0:
    raise UserError(f"model.dropout must be in [0, 1); got {h.dropout}")
  compute_dtype(h)  # UserError for an unknown model.dtype


class DropoutKeys:
  """Hands out a fresh key per dropout site from one key; None when there is no key.

  The count lives in Python and advances in trace order, so a call stays a pure function
  of its inputs and key.
  """

  def __init__(self, key: jax.Array | None):
    self.key = key
    self.count = 0

  def __call__(self) -> jax.Array | None:
    if self.key is None:
      return None
    self.count += 1
    return jax.random.fold_in(self.key, self.count)


def check_rngs(dropout: float, train: bool, rngs) -> DropoutKeys:
  if train and dropout > 0 and rngs is None:
    raise ValueError("training with dropout needs rngs= a jax key")
  return DropoutKeys(rngs if train else None)


def sinusoid(positions: jax.Array, d: int) -> jax.Array:
  """Sinusoidal encodings: int positions [...] -> float32 [..., d] (sin half, cos half)."""
  half = d // 2
  freq = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / max(half, 1))
  angle = positions.astype(jnp.float32)[..., None] * freq
  enc = jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)
  return jnp.pad(enc, [(0, 0)] * (enc.ndim - 1) + [(0, d - 2 * half)])


# ---------------------------------------------------------------- building blocks

class Embedder(nnx.Module):
  """Token embedding (possibly shared), positions and dropout: ids [b, L] -> [b, L, d]."""

  def __init__(self, embed: nnx.Embed, h: ConfigDict, *, rngs: nnx.Rngs):
    self.embed = embed
    self.pos = (nnx.Embed(h.max_len, h.d_model, dtype=compute_dtype(h), rngs=rngs)
                if h.positions == "learned" else None)
    self.drop = Dropout(h.dropout, h.get("dropout_rng", "threefry"))
    self.d_model = h.d_model
    self.max_len = h.max_len
    self.scale = math.sqrt(h.d_model) if h.scale_embeddings else 1.0

  def __call__(self, tokens: jax.Array, positions: jax.Array, *, train: bool,
               key: jax.Array | None) -> jax.Array:
    """tokens int [b, L], positions int [L] (static bound max_len) -> [b, L, d]."""
    x = self.embed(tokens) * self.scale
    pos = (self.pos(positions) if self.pos is not None
           else sinusoid(positions, self.d_model).astype(x.dtype))
    return self.drop(x + pos, deterministic=not train, rngs=key)


def check_length(length: int, max_len: int) -> None:
  if length > max_len:
    raise ValueError(f"sequence length {length} exceeds model.max_len {max_len}")


class Residual(nnx.Module):
  """Norm, dropout and residual around a sublayer f.

  post-LN: x <- norm(x + drop(f(x)));  pre-LN: x <- x + drop(f(norm(x))).
  Use as `y = f(res.inp(x)); x = res.out(x, y, ...)`.
  """

  def __init__(self, h: ConfigDict, *, rngs: nnx.Rngs):
    self.norm = nnx.LayerNorm(h.d_model, epsilon=h.ln_eps, dtype=compute_dtype(h), rngs=rngs)
    self.drop = Dropout(h.dropout, h.get("dropout_rng", "threefry"))
    self.pre = h.norm == "pre"

  def inp(self, x: jax.Array) -> jax.Array:
    return self.norm(x) if self.pre else x

  def out(self, x: jax.Array, y: jax.Array, *, train: bool, key) -> jax.Array:
    x = x + self.drop(y, deterministic=not train, rngs=key)
    return x if self.pre else self.norm(x)


class FeedForward(nnx.Module):
  """Linear -> ReLU -> dropout -> Linear: [..., d] -> [..., d]."""

  def __init__(self, h: ConfigDict, *, rngs: nnx.Rngs):
    self.up = nnx.Linear(h.d_model, h.d_ff, dtype=compute_dtype(h), rngs=rngs)
    self.down = nnx.Linear(h.d_ff, h.d_model, dtype=compute_dtype(h), rngs=rngs)
    self.drop = Dropout(h.dropout, h.get("dropout_rng", "threefry"))

  def __call__(self, x: jax.Array, *, train: bool, key) -> jax.Array:
    hidden = self.drop(jax.nn.relu(self.up(x)), deterministic=not train, rngs=key)
    return self.down(hidden)


def make_attention(h: ConfigDict, *, cross: bool, rngs: nnx.Rngs) -> Attention:
  """An attention block with the options of `h` (AttentionOptions.from_config); cross-attention
  always has the linear value map."""
  return AttentionOptions.from_config(h).layer(
      h.d_model, num_heads=h.num_heads, qk_features=h.qk_dim, v_features=h.d_model,
      out_features=h.d_model, d_mlp=h.d_mlp, cross=cross, rngs=rngs)


# ---------------------------------------------------------------- layers

class EncoderLayer(nnx.Module):

  def __init__(self, h: ConfigDict, *, rngs: nnx.Rngs):
    self.attn = make_attention(h, cross=False, rngs=rngs)
    self.ff = FeedForward(h, rngs=rngs)
    self.res_attn = Residual(h, rngs=rngs)
    self.res_ff = Residual(h, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array, *, train: bool,
               keys: DropoutKeys) -> jax.Array:
    """x [b, S, d], mask [b, 1, 1, S] (key is not padding) -> [b, S, d]."""
    y = self.attn(self.res_attn.inp(x), mask=mask)
    x = self.res_attn.out(x, y, train=train, key=keys())
    y = self.ff(self.res_ff.inp(x), train=train, key=keys())
    return self.res_ff.out(x, y, train=train, key=keys())


class DecoderLayer(nnx.Module):

  def __init__(self, h: ConfigDict, *, rngs: nnx.Rngs):
    self.self_attn = make_attention(h, cross=False, rngs=rngs)
    self.cross_attn = make_attention(h, cross=True, rngs=rngs)
    self.ff = FeedForward(h, rngs=rngs)
    self.res_self = Residual(h, rngs=rngs)
    self.res_cross = Residual(h, rngs=rngs)
    self.res_ff = Residual(h, rngs=rngs)

  def __call__(self, x: jax.Array, memory: jax.Array, self_mask: jax.Array,
               cross_mask: jax.Array, *, train: bool, keys: DropoutKeys) -> jax.Array:
    """x [b, T, d], memory [b, S, d], self_mask [1, 1, T, T], cross_mask [b, 1, 1, S]."""
    y = self.self_attn(self.res_self.inp(x), mask=self_mask)
    x = self.res_self.out(x, y, train=train, key=keys())
    y = self.cross_attn(self.res_cross.inp(x), memory, mask=cross_mask)
    x = self.res_cross.out(x, y, train=train, key=keys())
    y = self.ff(self.res_ff.inp(x), train=train, key=keys())
    return self.res_ff.out(x, y, train=train, key=keys())

  def step(self, x: jax.Array, t: jax.Array, cache: dict, memory_cache: dict,
           cross_mask: jax.Array) -> tuple[jax.Array, dict]:
    """One position: x [b, 1, d] at position t -> ([b, 1, d], updated self-attention cache);
    the caches are the attention layers' (Attention.init_cache, memory_cache)."""
    y, cache = self.self_attn.decode_step(self.res_self.inp(x), t, cache)
    x = self.res_self.out(x, y, train=False, key=None)
    y = self.cross_attn.attend_memory(self.res_cross.inp(x), memory_cache, cross_mask)
    x = self.res_cross.out(x, y, train=False, key=None)
    y = self.ff(self.res_ff.inp(x), train=False, key=None)
    return self.res_ff.out(x, y, train=False, key=None), cache


# ---------------------------------------------------------------- stacks

class Stack(nnx.Module):
  """Embedder, `h.num_layers` layers of class LAYER, final LayerNorm under pre-LN."""
  LAYER: type

  def __init__(self, embed: nnx.Embed, h: ConfigDict, *, rngs: nnx.Rngs):
    self.embedder = Embedder(embed, h, rngs=rngs)
    self.layers = nnx.List([self.LAYER(h, rngs=rngs) for _ in range(h.num_layers)])
    self.final_norm = (nnx.LayerNorm(h.d_model, epsilon=h.ln_eps, dtype=compute_dtype(h),
                                     rngs=rngs)
                       if h.norm == "pre" else None)

  def finish(self, x: jax.Array) -> jax.Array:
    return self.final_norm(x) if self.final_norm is not None else x


class Encoder(Stack):
  """Token ids [b, S] -> hidden states [b, S, d]."""
  LAYER = EncoderLayer

  def __call__(self, tokens: jax.Array, *, train: bool, keys: DropoutKeys) -> jax.Array:
    check_length(tokens.shape[1], self.embedder.max_len)
    x = self.embedder(tokens, jnp.arange(tokens.shape[1]), train=train, key=keys())
    mask = (tokens != PAD)[:, None, None, :]
    for layer in self.layers:
      x = layer(x, mask, train=train, keys=keys)
    return self.finish(x)


class Decoder(Stack):
  """Target input ids [b, T] and memory [b, S, d] -> hidden states [b, T, d]."""
  LAYER = DecoderLayer

  def __call__(self, tgt_in: jax.Array, memory: jax.Array, src_valid: jax.Array, *,
               train: bool, keys: DropoutKeys) -> jax.Array:
    """tgt_in [b, T], memory [b, S, d], src_valid bool [b, S] -> [b, T, d]."""
    length = tgt_in.shape[1]
    check_length(length, self.embedder.max_len)
    x = self.embedder(tgt_in, jnp.arange(length), train=train, key=keys())
    causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
    cross = src_valid[:, None, None, :]
    for layer in self.layers:
      x = layer(x, memory, causal, cross, train=train, keys=keys)
    return self.finish(x)

  def step(self, token: jax.Array, t: jax.Array, caches: list[dict],
           memory_caches: list[dict], src_valid: jax.Array) -> tuple[jax.Array, list[dict]]:
    """token int [b] at position t -> (hidden [b, d], updated caches)."""
    x = self.embedder(token[:, None], t[None], train=False, key=None)
    cross = src_valid[:, None, None, :]
    new = []
    for layer, cache, mem in zip(self.layers, caches, memory_caches):
      x, cache = layer.step(x, t, cache, mem, cross)
      new.append(cache)
    return self.finish(x)[:, 0], new


# ---------------------------------------------------------------- models

class Transformer(nnx.Module):
  """Encoder-decoder: (src [b, S], tgt_in [b, T]) -> logits [b, T, tgt_vocab].

  Decoding pieces (used by metricattn.models.decoding): `encode`, `decode`, `init_cache`,
  `step`.
  """

  def __init__(self, src_vocab: int, tgt_vocab: int, h: ConfigDict, *, rngs: nnx.Rngs):
    check(h)
    if h.share_embeddings and src_vocab != tgt_vocab:
      raise UserError(f"model.share_embeddings needs one vocabulary; source has {src_vocab} "
                      f"tokens, target {tgt_vocab} (set data.shared_vocab=True)")
    self.dropout, self.max_len = h.dropout, h.max_len
    dtype = compute_dtype(h)
    src_embed = nnx.Embed(src_vocab, h.d_model, dtype=dtype, rngs=rngs)
    tgt_embed = (src_embed if h.share_embeddings
                 else nnx.Embed(tgt_vocab, h.d_model, dtype=dtype, rngs=rngs))
    self.encoder = Encoder(src_embed, h, rngs=rngs)
    self.decoder = Decoder(tgt_embed, h, rngs=rngs)
    self.out = None if h.tie_output else nnx.Linear(h.d_model, tgt_vocab, dtype=dtype, rngs=rngs)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """[..., d] -> [..., tgt_vocab], in the activations' dtype (the loss casts to float32)."""
    if self.out is None:
      return self.decoder.embedder.embed.attend(hidden)
    return self.out(hidden)

  def encode(self, src: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
    """src [b, S] -> memory [b, S, d]."""
    return self.encoder(src, train=train, keys=check_rngs(self.dropout, train, rngs))

  def decode(self, tgt_in: jax.Array, memory: jax.Array, src: jax.Array) -> jax.Array:
    """Uncached, evaluation mode: tgt_in [b, T], memory [b, S, d] -> logits [b, T, V]."""
    hidden = self.decoder(tgt_in, memory, src != PAD, train=False, keys=DropoutKeys(None))
    return self.logits(hidden)

  def __call__(self, src: jax.Array, tgt_in: jax.Array, *, train: bool = False,
               rngs=None) -> jax.Array:
    keys = check_rngs(self.dropout, train, rngs)
    memory = self.encoder(src, train=train, keys=keys)
    return self.logits(self.decoder(tgt_in, memory, src != PAD, train=train, keys=keys))

  def init_cache(self, memory: jax.Array, max_len: int) -> tuple[list[dict], list[dict]]:
    """(self-attention caches for max_len positions, cross-attention memory caches)."""
    check_length(max_len, self.max_len)
    layers = self.decoder.layers
    return ([layer.self_attn.init_cache(memory.shape[0], max_len) for layer in layers],
            [layer.cross_attn.memory_cache(memory) for layer in layers])

  def step(self, token: jax.Array, t: jax.Array, caches: list[dict],
           memory_caches: list[dict], src: jax.Array) -> tuple[jax.Array, list[dict]]:
    """token int [b] at position t -> (logits [b, V], updated caches)."""
    hidden, caches = self.decoder.step(token, t, caches, memory_caches, src != PAD)
    return self.logits(hidden), caches


def from_config(m: ConfigDict, info: dict, rngs: nnx.Rngs) -> Transformer:
  """Builds the Transformer from `config.model` and the dataset's info (src_vocab_size,
  tgt_vocab_size)."""
  return Transformer(info["src_vocab_size"], info["tgt_vocab_size"], m, rngs=rngs)
