"""The paper's Moon data: sklearn `make_moons`, generated from a seed, split train/test."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_moons

from metricattn.data.arrays import ArrayData


def moons_splits(num_train: int, num_test: int, noise: float, seed: int):
  """Returns {"train": (x, y), "test": (x, y)}; make_moons shuffles, so the split is random."""
  x, y = make_moons(n_samples=num_train + num_test, noise=noise, random_state=seed)
  x, y = x.astype(np.float32), y.astype(np.int32)
  return {"train": (x[:num_train], y[:num_train]), "test": (x[num_train:], y[num_train:])}


class MoonsData(ArrayData):
  """Moon data from `config.data` (num_train, num_test, noise, seed; seed -1 = config.seed)."""

  def __init__(self, config):
    d = config.data
    seed = config.seed if d.seed < 0 else d.seed
    super().__init__(config, moons_splits(d.num_train, d.num_test, d.noise, seed),
                     num_classes=2, eval_splits=("test",))
