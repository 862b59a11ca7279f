"""Greedy and beam-search decoding for `Transformer`, under `jax.jit`.

`decode(model, src, ...)` is the entry point: it splits the NNX model into graph and state
and calls one jitted function (compiled once per graph, shapes and decoding settings).

Outputs are int32 [batch, max_len]: generated tokens (no BOS), the first EOS included,
padding (0) after it. Position t of the target is decoded from the tokens before it.

Two interchangeable step functions feed the search:
  cached    a key/value cache per decoder layer ([n, max_len, heads, dim]); for l2 and
            metric attention the keys' squared norms are cached too, and the encoder
            memory's keys, values and squared norms are computed once.
  uncached  the whole decoder re-run on the growing target buffer at every step
            (the reference the cached path is tested against).
Padding and BOS are never generated.

Beam search keeps `beam_size` hypotheses per example ranked by summed log-probability;
finished hypotheses stay in the beam with their score frozen (they only extend with
padding). The returned hypothesis maximises score / ((5 + length) / 6) ** length_penalty
(GNMT; length_penalty 0 picks the highest log-probability). beam_size 1 is greedy decoding.

config.eval fields are read by the Translation task (tasks.py), not here.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

PAD = 0
NEG = -1e9  # initial score of the beams that start as copies of beam 0


def _ban_specials(logits: jax.Array, bos_id: int) -> jax.Array:
  """float32 logits [n, V] with padding and BOS set to -inf."""
  logits = logits.astype(jnp.float32)
  return logits.at[:, PAD].set(-jnp.inf).at[:, bos_id].set(-jnp.inf)


def make_stepper(model, src: jax.Array, max_len: int, cached: bool):
  """Returns (state0, step) with step(state, tokens [n], t) -> (logits [n, V], state).

  Every leaf of `state` has the examples on axis 0, so beams can reorder it.
  """
  memory = model.encode(src)
  if cached:
    caches, memory_caches = model.init_cache(memory, max_len)

    def step(state, tokens, t):
      return model.step(tokens, t, state, memory_caches, src)

    return caches, step

  def step_uncached(buf, tokens, t):
    buf = jax.lax.dynamic_update_slice_in_dim(buf, tokens[:, None], t, 1)
    logits = model.decode(buf, memory, src)
    return jax.lax.dynamic_index_in_dim(logits, t, 1, keepdims=False), buf

  return jnp.zeros((src.shape[0], max_len), jnp.int32), step_uncached


def greedy_search(step: Callable, state, batch: int, *, bos_id: int, eos_id: int,
                  max_len: int) -> jax.Array:
  """Argmax decoding -> tokens int32 [batch, max_len]."""

  def cond(carry):
    t, _, done, _, _ = carry
    return (t < max_len) & ~jnp.all(done)

  def body(carry):
    t, last, done, out, state = carry
    logits, state = step(state, last, t)
    nxt = jnp.argmax(_ban_specials(logits, bos_id), axis=-1).astype(jnp.int32)
    nxt = jnp.where(done, PAD, nxt)
    out = out.at[:, t].set(nxt)
    return t + 1, nxt, done | (nxt == eos_id), out, state

  carry = (jnp.int32(0), jnp.full((batch,), bos_id, jnp.int32), jnp.zeros((batch,), bool),
           jnp.zeros((batch, max_len), jnp.int32), state)
  return jax.lax.while_loop(cond, body, carry)[3]


def _reorder(x: jax.Array, parent: jax.Array) -> jax.Array:
  """x [b * K, ...] -> rows picked by parent [b, K] (beam indices within each example)."""
  b, k = parent.shape
  y = x.reshape(b, k, *x.shape[1:])
  idx = parent.reshape(b, k, *([1] * (x.ndim - 1)))
  return jnp.take_along_axis(y, idx, axis=1).reshape(x.shape)


def beam_search(step: Callable, state, batch: int, *, bos_id: int, eos_id: int,
                max_len: int, beam_size: int, length_penalty: float) -> jax.Array:
  """Beam search over `state` prepared for batch * beam_size rows -> int32 [batch, max_len]."""
  k = beam_size

  def cond(carry):
    t, _, _, done, _, _ = carry
    return (t < max_len) & ~jnp.all(done)

  def body(carry):
    t, last, scores, done, seqs, state = carry
    logits, state = step(state, last, t)
    logp = jax.nn.log_softmax(_ban_specials(logits, bos_id)).reshape(batch, k, -1)
    vocab = logp.shape[-1]
    only_pad = jnp.where(jnp.arange(vocab) == PAD, 0.0, -jnp.inf)
    logp = jnp.where(done[..., None], only_pad, logp)
    top, idx = jax.lax.top_k((scores[..., None] + logp).reshape(batch, k * vocab), k)
    parent, tok = idx // vocab, (idx % vocab).astype(jnp.int32)
    seqs = jnp.take_along_axis(seqs, parent[..., None], axis=1).at[:, :, t].set(tok)
    done = jnp.take_along_axis(done, parent, axis=1) | (tok == eos_id)
    state = jax.tree.map(lambda x: _reorder(x, parent), state)
    return t + 1, tok.reshape(-1), top, done, seqs, state

  scores = jnp.tile(jnp.where(jnp.arange(k) == 0, 0.0, NEG), (batch, 1))
  carry = (jnp.int32(0), jnp.full((batch * k,), bos_id, jnp.int32), scores,
           jnp.zeros((batch, k), bool), jnp.zeros((batch, k, max_len), jnp.int32), state)
  _, _, scores, _, seqs, _ = jax.lax.while_loop(cond, body, carry)
  lengths = jnp.sum(seqs != PAD, axis=-1).astype(jnp.float32)
  normed = scores / ((5.0 + lengths) / 6.0) ** length_penalty
  best = jnp.argmax(normed, axis=1)
  return jnp.take_along_axis(seqs, best[:, None, None], axis=1)[:, 0]


def decode_model(model, src: jax.Array, *, bos_id: int, eos_id: int, max_len: int,
                 beam_size: int = 1, length_penalty: float = 0.0,
                 cached: bool = True) -> jax.Array:
  """Not jitted: src int32 [batch, S] -> tokens int32 [batch, max_len]."""
  batch = src.shape[0]
  if beam_size == 1:
    state, step = make_stepper(model, src, max_len, cached)
    return greedy_search(step, state, batch, bos_id=bos_id, eos_id=eos_id, max_len=max_len)
  state, step = make_stepper(model, jnp.repeat(src, beam_size, axis=0), max_len, cached)
  return beam_search(step, state, batch, bos_id=bos_id, eos_id=eos_id, max_len=max_len,
                     beam_size=beam_size, length_penalty=length_penalty)


@functools.partial(jax.jit, static_argnames=(
    "graphdef", "bos_id", "eos_id", "max_len", "beam_size", "length_penalty", "cached"))
def _decode_jit(graphdef, params, src, *, bos_id, eos_id, max_len, beam_size,
                length_penalty, cached):
  return decode_model(nnx.merge(graphdef, params), src, bos_id=bos_id, eos_id=eos_id,
                      max_len=max_len, beam_size=beam_size, length_penalty=length_penalty,
                      cached=cached)


def decode(model, src, *, bos_id: int, eos_id: int, max_len: int, beam_size: int = 1,
           length_penalty: float = 0.0, cached: bool = True) -> jax.Array:
  """Jitted decoding: src int32 [batch, S] (0 = padding) -> int32 [batch, max_len].

  beam_size 1 is greedy; `cached=False` re-runs the decoder each step (for tests).
  """
  if beam_size < 1:
    raise ValueError(f"beam_size must be >= 1; got {beam_size}")
  graphdef, params = nnx.split(model)
  return _decode_jit(graphdef, params, jnp.asarray(src, jnp.int32), bos_id=int(bos_id),
                     eos_id=int(eos_id), max_len=int(max_len), beam_size=int(beam_size),
                     length_penalty=float(length_penalty), cached=bool(cached))
