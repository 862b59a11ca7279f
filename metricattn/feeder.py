"""The training step's data: `Feeder(datas, ...)(step)` gives the step's data arguments.

Datasets whose batch is `train_indices(step)` of fixed arrays keep those arrays on the
device; each step then gets a block of batch indices, INDEX_BLOCK steps sent in one
transfer. Other datasets (augmentation, tokens, arrays over 1 GiB) make each batch on the
host, sharded over the devices; their shape may change from step to step (translation's
length buckets: the trainer compiles one program per shape). With stacked seeds (`stacked`)
every argument has a leading seed axis, and the step maps over it (`over_seeds`).

With several processes (`metricattn.multihost`) the arrays are global: every process makes
the same index blocks, and each places only its own devices' parts. A run's host batches
are made by each process for its own rows only, when the data set's `train_batch` takes
`rows` (in-memory arrays and images); otherwise it makes the global batch and places its
rows.
"""

from __future__ import annotations

import inspect

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from metricattn import multihost
from metricattn.errors import UserError

INDEX_BLOCK = 64  # steps whose batch indices go to the device in one transfer
RESIDENT_MAX_BYTES = 1 << 30
# How stacked seeds share one program (`config.train.stacked_seeds`; "vmap" for configs
# without the field): "vmap" batches every operation over the seed axis; "unroll" traces
# one copy of the step per seed and stacks the results, so that XLA compiles each seed's
# operations unbatched and runs the copies side by side on the cores. Batched gathers,
# scatters and small matmuls are slow on XLA:CPU, so "unroll" is faster for the graph IPN
# (configs/mesh_seg.py; docs/graph.md); it compiles longer, and each seed computes what a
# run of its own computes. Seeds split over several devices are always vmapped.
STACKED_SEEDS = ("vmap", "unroll")


def over_seeds(fn, in_axes: tuple, how: str = "vmap"):
  """`fn` mapped over the leading seed axis of its arguments whose `in_axes` entry is 0
  (None: shared by every seed), `how` one of STACKED_SEEDS."""
  if how == "vmap":
    return jax.vmap(fn, in_axes=in_axes)
  if how != "unroll":
    raise UserError(f"unknown train.stacked_seeds {how!r}; allowed: {', '.join(STACKED_SEEDS)}")

  def unrolled(*args):
    seeds = jax.tree.leaves(next(a for a, ax in zip(args, in_axes) if ax == 0))[0].shape[0]
    pick = lambda i: [a if ax is None else jax.tree.map(lambda x: x[i], a)
                      for a, ax in zip(args, in_axes)]
    outs = [fn(*pick(i)) for i in range(seeds)]
    return jax.tree.map(lambda *xs: jax.numpy.stack(xs), *outs)

  return unrolled


def stack_trees(trees):
  return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def stack_batches(batches: list[dict]) -> dict:
  """The batches of stacked runs, stacked; arrays of different widths (length buckets) are
  first 0-padded at the end to the widest."""
  def stack(*xs):
    shape = np.max([x.shape for x in xs], axis=0)
    return np.stack([np.pad(x, [(0, n - m) for n, m in zip(shape, x.shape)]) for x in xs])
  return jax.tree.map(stack, *batches)


def shard_batch(batch: dict, sharding: NamedSharding) -> dict:
  """The global batch arrays; each process places only its devices' parts of them."""
  return {k: multihost.put(np.asarray(v), sharding) for k, v in batch.items()}


def process_rows(sharding: NamedSharding, batch_size: int) -> slice | None:
  """The rows of a global batch split by `sharding` along its first axis that this
  process's devices hold, or None when they are not one contiguous block."""
  spans = [index[0].indices(batch_size)[:2] for index in
           sharding.addressable_devices_indices_map((batch_size,)).values()]
  start, stop = min(s for s, _ in spans), max(e for _, e in spans)
  held = sum(e - s for s, e in set(spans))
  return slice(start, stop) if held == stop - start else None


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
    self.datas, self.stacked, self.by_seed = datas, stacked, by_seed
    self.arrays, self.per_seed = resident_arrays(datas)
    if self.arrays is not None:
      sharding = state_sharding if self.per_seed else NamedSharding(mesh, P())
      self.arrays = {k: multihost.put(v, sharding) for k, v in self.arrays.items()}
    # Batches: split along the batch axis, or along the seed axis.
    self.batch_sharding = NamedSharding(
        mesh, P(None, "data") if stacked and not by_seed else P("data"))
    # Index blocks: [(seeds,) INDEX_BLOCK, batch], split like the batches they select.
    self.index_sharding = NamedSharding(mesh, P("data") if by_seed else
                                        P(*[None] * (2 if stacked else 1), "data"))
    self.block_first, self.block = None, None
    self.rows = None  # this process's rows of the global batch, when it makes only those
    if (jax.process_count() > 1 and not stacked and self.arrays is None
        and "rows" in inspect.signature(datas[0].train_batch).parameters):
      self.rows = process_rows(self.batch_sharding, datas[0].batch_size)

  def step_fn(self, step_fn, stacked_seeds: str = "vmap"):
    """`step_fn` (params, opt_state, batch, step, key, lr_scale) taking this feeder's data
    arguments in place of `batch`, mapped over the seeds when stacked (`over_seeds`, `how`
    `stacked_seeds`; vmapped when the seeds are split over the devices, so that each device
    runs its own)."""
    how = "vmap" if self.by_seed else stacked_seeds
    if self.arrays is not None:
      step_fn = gathering(step_fn)
      if self.stacked:
        step_fn = over_seeds(step_fn, (0, 0, 0 if self.per_seed else None, 0, None, 0, None),
                             how)
    elif self.stacked:
      step_fn = over_seeds(step_fn, (0, 0, 0, None, 0, None), how)
    return step_fn

  def __call__(self, step: int) -> tuple:
    """The step's data arguments: (batch,), or (arrays, index block) with resident arrays."""
    if self.arrays is not None:
      first = step - step % INDEX_BLOCK
      if self.block_first != first:
        idx = [np.stack([d.train_indices(s) for s in range(first, first + INDEX_BLOCK)])
               for d in self.datas]
        self.block_first = first
        self.block = multihost.put(np.stack(idx) if self.stacked else idx[0],
                                   self.index_sharding)
      return self.arrays, self.block
    if self.rows is not None:
      batch = self.datas[0].train_batch(step, self.rows)
      return ({k: jax.make_array_from_process_local_data(
          self.batch_sharding, v, (self.datas[0].batch_size, *v.shape[1:]))
          for k, v in batch.items()},)
    batches = [d.train_batch(step) for d in self.datas]
    return (shard_batch(stack_batches(batches) if self.stacked else batches[0],
                        self.batch_sharding),)
