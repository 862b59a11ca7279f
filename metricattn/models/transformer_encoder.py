"""The Transformer encoder as a sequence classifier (Flax NNX): tokens -> class logits.

  x uint8/int [b, L] token ids (0 = padding) -> (class token) -> the encoder of
  metricattn/models/transformer.py (embedding, positions, `num_layers` layers whose
  self-attention is the project's `Attention` of the configured kind, padding masked)
  -> pooled state -> Linear(d_ff), ReLU, Linear(num_classes) -> logits [b, num_classes]

Pooling (`pool`): "cls" prepends a class token (an extra embedding row, id = vocab_size,
never padding) and uses its final state; "mean" averages the final states of the non-padding
positions. The two-layer head is LRA's `classifier_head` (hidden width = the MLP width).
With `norm` "pre" and `positions` "sinusoidal" the encoder is LRA's (pre-LayerNorm blocks,
a final LayerNorm, sinusoidal positions); LRA also drops out attention weights (rate 0.1),
which this encoder does not, and has no biases in the attention projections. The number of
positions comes from the data set (`info["seq_len"]`, plus one for the class token).

Config fields read by `from_config` (config.model.*): name ("transformer_encoder"),
attention, value_map, num_layers, num_heads, d_model, qk_dim, d_mlp, d_ff, dropout, scale,
norm, ln_eps, positions, scale_embeddings, dropout_rng, dtype, implementation (meanings:
metricattn/models/transformer.py; the attention options, `AttentionOptions.CONFIG_FIELDS`:
metricattn/attention/layer.py), pool. Dataset
info: vocab_size, num_classes, seq_len. With dtype "bfloat16" the classifier's head computes
in bfloat16 too; pooling is float32 and the task casts the logits to float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from ml_collections import ConfigDict

from metricattn.attention import AttentionOptions, compute_dtype
from metricattn.errors import UserError
from metricattn.models.transformer import PAD, Encoder, check, check_rngs

POOLS = ("cls", "mean")
FIELDS = ("attention", "value_map", "num_layers", "num_heads", "d_model", "qk_dim", "d_mlp",
          "d_ff", "dropout", "scale", "norm", "ln_eps", "positions", "scale_embeddings")


class EncoderClassifier(nnx.Module):
  """x int [b, L] (0 = padding) -> logits [b, num_classes]; `h` holds FIELDS and max_len
  (positions, at least L + 1 with pool "cls")."""

  def __init__(self, vocab_size: int, num_classes: int, h: ConfigDict, *, pool: str,
               rngs: nnx.Rngs):
    check(h)
    if pool not in POOLS:
      raise UserError(f"unknown model.pool {pool!r}; allowed: {', '.join(POOLS)}")
    self.pool, self.dropout = pool, h.dropout
    self.cls_id = vocab_size
    dtype = compute_dtype(h)
    embed = nnx.Embed(vocab_size + (pool == "cls"), h.d_model, dtype=dtype, rngs=rngs)
    self.encoder = Encoder(embed, h, rngs=rngs)
    self.hidden = nnx.Linear(h.d_model, h.d_ff, dtype=dtype, rngs=rngs)
    self.head = nnx.Linear(h.d_ff, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
    keys = check_rngs(self.dropout, train, rngs)
    tokens = x.astype(jnp.int32)
    if self.pool == "cls":
      cls = jnp.full((tokens.shape[0], 1), self.cls_id, jnp.int32)
      tokens = jnp.concatenate([cls, tokens], axis=1)
    states = self.encoder(tokens, train=train, keys=keys)
    if self.pool == "cls":
      pooled = states[:, 0]
    else:
      valid = (tokens != PAD).astype(jnp.float32)[..., None]
      pooled = (jnp.sum(states.astype(jnp.float32) * valid, axis=1)
                / jnp.maximum(jnp.sum(valid, axis=1), 1.0))
    return self.head(jax.nn.relu(self.hidden(pooled)))


def from_config(m: ConfigDict, info: dict, rngs: nnx.Rngs) -> EncoderClassifier:
  """Builds the classifier from `config.model` (fields: module docstring) and the dataset's
  info (vocab_size, num_classes, seq_len)."""
  h = ConfigDict({k: m[k] for k in FIELDS})
  # the other attention options where the config has them (implementation, dtype)
  h.update({k: m[k] for k in AttentionOptions.CONFIG_FIELDS if k not in h and k in m})
  h.dropout_rng = m.get("dropout_rng", "threefry")  # runs made before the field: threefry
  h.max_len = int(info["seq_len"]) + (m.pool == "cls")
  return EncoderClassifier(info["vocab_size"], info["num_classes"], h, pool=m.pool,
                           rngs=rngs)
