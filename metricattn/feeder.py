"""The training step's data: `Feeder(datas, ...)(step)` gives the step's data arguments.

Datasets whose batch is `train_indices(step)` of fixed arrays keep those arrays on the
device; each step then gets a block of batch indices, INDEX_BLOCK steps sent in one
transfer. Other datasets (augmentation, tokens, arrays over 1 GiB) make each batch on the
host, sharded over the devices. With vmapped seeds (`stacked`) every argument has a leading
seed axis.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

INDEX_BLOCK = 64  # steps whose batch indices go to the device in one transfer
RESIDENT_MAX_BYTES = 1 << 30


def stack_trees(trees):
  return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def shard_batch(batch: dict, sharding: NamedSharding) -> dict:
  return {k: jax.device_put(np.asarray(v), sharding) for k, v in batch.items()}


def gathering(step_fn):
  """The step fed with the device-resident training arrays and a block of batch indices
  [INDEX_BLOCK, batch] that holds its own at row step % INDEX_BLOCK."""

  def fn(params, opt_state, arrays, idx_block, step, key, lr_scale):
    idx = idx_block[step % INDEX_BLOCK]
    return step_fn(params, opt_state, {k: v[idx] for k, v in arrays.items()}, step, key,
                   lr_scale)

  return fn


def resident_arrays(datas) -> tuple[dict | None, bool]:
  """(arrays, per_seed): the training arrays to keep on the device, or None (a dataset makes
  its batches otherwise, e.g. with augmentation or tokens, or they exceed 1 GiB). They are
  shared by all runs when equal (the same images for every seed), else stacked per run."""
  arrays = [d.resident_arrays() if hasattr(d, "resident_arrays") else None for d in datas]
  if any(a is None for a in arrays):
    return None, False
  first = arrays[0]
  shared = all(a.keys() == first.keys() and all(np.array_equal(a[k], first[k]) for k in a)
               for a in arrays[1:])
  copies = 1 if shared else len(arrays)
  if copies * sum(v.nbytes for v in first.values()) > RESIDENT_MAX_BYTES:
    return None, False
  return (first if shared else stack_trees(arrays)), not shared


class Feeder:
  """The data arguments of each training step of the runs `datas` (one, or stacked seeds).

  `state_sharding` is the sharding of the training state (replicated, or split along the
  seed axis when `by_seed`); per-seed resident arrays and index blocks follow it.
  """

  def __init__(self, datas, mesh, state_sharding: NamedSharding, stacked: bool,
               by_seed: bool):
    self.datas, self.stacked = datas, stacked
    self.arrays, self.per_seed = resident_arrays(datas)
    if self.arrays is not None:
      self.arrays = jax.device_put(
          self.arrays, state_sharding if self.per_seed else NamedSharding(mesh, P()))
    # Batches: split along the batch axis, or along the seed axis.
    self.batch_sharding = NamedSharding(
        mesh, P(None, "data") if stacked and not by_seed else P("data"))
    # Index blocks: [(seeds,) INDEX_BLOCK, batch], split like the batches they select.
    self.index_sharding = NamedSharding(mesh, P("data") if by_seed else
                                        P(*[None] * (2 if stacked else 1), "data"))
    self.block_first, self.block = None, None

  def step_fn(self, step_fn):
    """`step_fn` (params, opt_state, batch, step, key, lr_scale) taking this feeder's data
    arguments in place of `batch`, vmapped over the seeds when stacked."""
    if self.arrays is not None:
      step_fn = gathering(step_fn)
      if self.stacked:
        step_fn = jax.vmap(step_fn,
                           in_axes=(0, 0, 0 if self.per_seed else None, 0, None, 0, None))
    elif self.stacked:
      step_fn = jax.vmap(step_fn, in_axes=(0, 0, 0, None, 0, None))
    return step_fn

  def __call__(self, step: int) -> tuple:
    """The step's data arguments: (batch,), or (arrays, index block) with resident arrays."""
    if self.arrays is not None:
      first = step - step % INDEX_BLOCK
      if self.block_first != first:
        idx = [np.stack([d.train_indices(s) for s in range(first, first + INDEX_BLOCK)])
               for d in self.datas]
        self.block_first = first
        self.block = jax.device_put(np.stack(idx) if self.stacked else idx[0],
                                    self.index_sharding)
      return self.arrays, self.block
    batches = [d.train_batch(step) for d in self.datas]
    return (shard_batch(stack_trees(batches) if self.stacked else batches[0],
                        self.batch_sharding),)
