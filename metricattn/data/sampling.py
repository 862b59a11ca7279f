"""Batch order as a pure function of (seed, step), so that a resumed run sees the same data."""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=4)
def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The read-only seeded permutation of epoch `epoch`, computed once per epoch rather than
  once per step (2.5 ms for 55,000 examples)."""
  perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
  perm.flags.writeable = False
  return perm


def batch_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Indices of training batch `step` (0-based): epochs of seeded permutations, remainder dropped."""
  if batch_size > num_examples:
    raise ValueError(f"batch size {batch_size} exceeds the {num_examples} training examples")
  per_epoch = num_examples // batch_size
  epoch, pos = divmod(step, per_epoch)
  return epoch_permutation(num_examples, seed, epoch)[pos * batch_size:(pos + 1) * batch_size]


def eval_chunks(num_examples: int, batch_size: int):
  """(start, stop) of consecutive evaluation chunks covering all examples (last may be short)."""
  for start in range(0, num_examples, batch_size):
    yield start, min(start + batch_size, num_examples)
