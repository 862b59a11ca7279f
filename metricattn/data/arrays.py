"""In-memory array datasets: seeded training batches and evaluation in three modes.

`config.eval.mode` says how evaluation examples are presented to the model:
  plain          independent examples (ViT and other per-example models); no `mask`.
  batch          set models (IPN): an evaluation chunk is one set and attends within itself.
  train_context  set models (IPN): each evaluation example attends to itself plus a fixed,
                 seeded set of `config.eval.context_size` training examples, never to other
                 evaluation examples, so its prediction does not depend on the chunk.
Chunks are padded to `config.eval.batch_size` (one compiled shape); padding has weight 0
and is never attended to.
"""

from __future__ import annotations

import numpy as np

from metricattn.data.sampling import batch_indices, eval_chunks
from metricattn.errors import UserError

EVAL_MODES = ("plain", "batch", "train_context")


class ArrayData:
  """Classification data held as NumPy arrays.

  Args:
    config: the run config (reads seed, data.batch_size, eval.mode (default "plain"),
      eval.batch_size, eval.context_size).
    splits: name -> (x [n, ...], y int32 [n]); must include "train".
    num_classes: number of classes.
    eval_splits: names of the splits to evaluate during training.
    x_dtype: the inputs' type: float32 features, or integer tokens.
  """

  def __init__(self, config, splits: dict[str, tuple[np.ndarray, np.ndarray]],
               num_classes: int, eval_splits: tuple[str, ...], x_dtype=np.float32):
    self.seed = int(config.seed)
    self.batch_size = int(config.data.batch_size)
    self.mode = config.eval.get("mode", "plain")
    if self.mode not in EVAL_MODES:
      raise UserError(f"unknown eval.mode {self.mode!r}; allowed: {', '.join(EVAL_MODES)}")
    self.eval_batch_size = int(config.eval.batch_size)
    self.splits = {k: (np.asarray(x, x_dtype), np.asarray(y, np.int32))
                   for k, (x, y) in splits.items()}
    self.eval_splits = tuple(eval_splits)
    x_train = self.splits["train"][0]
    if self.batch_size > len(x_train):
      raise UserError(f"data.batch_size {self.batch_size} exceeds the {len(x_train)} "
                      "training examples")
    self.info = {"num_classes": num_classes, "input_shape": x_train.shape[1:],
                 "num_train": len(x_train)}
    self.context = None
    if self.mode == "train_context":
      size = int(config.eval.context_size)
      if not 0 < size <= len(x_train):
        raise UserError(f"eval.context_size must be in 1..{len(x_train)}; got {size}")
      idx = np.random.default_rng([self.seed, 1]).choice(len(x_train), size, replace=False)
      self.context = (x_train[idx], self.splits["train"][1][idx])

  def train_indices(self, step: int) -> np.ndarray:
    """Indices into the training split of training batch `step`."""
    return batch_indices(len(self.splits["train"][0]), self.batch_size, self.seed, step)

  def train_batch(self, step: int, rows: slice = slice(None)) -> dict[str, np.ndarray]:
    """Training batch `step`, or only its `rows` (one process's share of the global batch)."""
    x, y = self.splits["train"]
    idx = self.train_indices(step)[rows]
    return {"x": x[idx], "y": y[idx]}

  def resident_arrays(self) -> dict[str, np.ndarray] | None:
    """The training split, when a training batch is just `train_indices(step)` of it: the
    trainer then keeps it on the device and sends only the indices each step."""
    x, y = self.splits["train"]
    return {"x": x, "y": y}

  def eval_batches(self, split: str):
    x, y = self.splits[split]
    n = self.eval_batch_size
    for start, stop in eval_chunks(len(x), n):
      pad = n - (stop - start)
      xb = np.concatenate([x[start:stop], np.zeros((pad, *x.shape[1:]), x.dtype)])
      yb = np.concatenate([y[start:stop], np.zeros(pad, y.dtype)])
      valid = np.arange(n) < stop - start
      batch = {"x": xb, "y": yb, "weight": valid.astype(np.float32)}
      if self.mode == "batch":
        batch["mask"] = valid[None, :] | np.eye(n, dtype=bool)
      elif self.mode == "train_context":
        cx, cy = self.context
        c = len(cx)
        total = c + n
        j = np.arange(total)
        batch = {"x": np.concatenate([cx, xb]), "y": np.concatenate([cy, yb]),
                 "weight": np.concatenate([np.zeros(c, np.float32), batch["weight"]]),
                 "mask": (j[None, :] < c) | (j[:, None] == j[None, :])}
      yield batch
