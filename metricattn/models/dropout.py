"""Dropout whose random bits are cheap: a keyed integer hash instead of threefry per element.

`jax.random.bernoulli` draws every element through threefry-2x32 (20 rounds); on a CPU that
cost 17-24% of a Transformer train step (scripts/bench_transformer.py, docs/performance.md).
`rng="hash"` draws two 32-bit words from the key with threefry, once per call, and gives
element i the bits fmix32(fmix32(i ^ w0) + w1), where fmix32 is MurmurHash3's finaliser (a
bijection of 32-bit words with full avalanche). An element is kept when its bits fall below
round(keep * 2**32), so the keep probability is exact to 2**-32. Different keys (dropout
sites, steps, seeds) give different words, hence unrelated masks; the same key gives the same
mask, so steps stay pure functions of their key. The bits are not a cryptographic or
general-purpose stream; for dropout only. `tests/test_dropout.py` checks the keep rate, that
masks of different keys and of neighbouring elements are uncorrelated, and determinism.

`rng="threefry"` is Flax's `nnx.Dropout` itself (bitwise): the runs and results made before
the hash existed (e.g. results/lra_listops) keep their masks.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from metricattn.errors import UserError

RNGS = ("hash", "threefry")


def check_rng(rng: str) -> str:
  if rng not in RNGS:
    raise UserError(f"unknown model.dropout_rng {rng!r}; allowed: {', '.join(RNGS)}")
  return rng


def fmix32(h: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finaliser on uint32 words."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def hash_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """uint32 bits of `shape` from `key`: element i gets fmix32(fmix32(i ^ w0) + w1)."""
  size = math.prod(shape)
  if size > 2**32:
    raise ValueError(f"hash dropout draws at most 2**32 elements per call; got {shape}")
  w = jax.random.bits(key, (2,), jnp.uint32)
  index = jax.lax.iota(jnp.uint32, size).reshape(shape)
  return fmix32(fmix32(index ^ w[0]) + w[1])


def keep_mask(key: jax.Array, keep: float, shape: tuple[int, ...]) -> jax.Array:
  """bool mask of `shape`, True with probability `keep` (to 2**-32) per element."""
  threshold = min(round(keep * 2**32), 2**32 - 1)
  return hash_bits(key, shape) < jnp.uint32(threshold)


class Dropout(nnx.Module):
  """Inverted dropout at `rate`, called like `nnx.Dropout`: drop(x, deterministic=, rngs=key),
  with the key's bits drawn by `rng` ("hash" or "threefry", see the module docstring)."""

  def __init__(self, rate: float, rng: str = "hash"):
    self.rate = rate
    self.rng = check_rng(rng)
    self.threefry = nnx.Dropout(rate) if rng == "threefry" else None

  def __call__(self, x: jax.Array, *, deterministic: bool,
               rngs: jax.Array | None = None) -> jax.Array:
    if self.threefry is not None:
      return self.threefry(x, deterministic=deterministic, rngs=rngs)
    if deterministic or self.rate == 0.0:
      return x
    if rngs is None:
      raise ValueError("dropout in training needs a key: drop(x, deterministic=False, rngs=key)")
    keep = 1.0 - self.rate
    return jnp.where(keep_mask(rngs, keep, x.shape), x / jnp.asarray(keep, x.dtype),
                     jnp.zeros((), x.dtype))
