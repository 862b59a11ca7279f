"""Restoring a trained model from a run's workdir: its config, data, task and parameters at a
checkpoint, for a run trained alone or as one of vmapped seeds (`evaluate`, `robustness`,
the mesh figure and the theory probes read runs through here)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from metricattn.checkpoint import Checkpointer
from metricattn.errors import UserError
from metricattn.optim import make_optimizer
from metricattn.runs import checkpoint_home, run_config, vmapped_seeds
from metricattn.train import build


def restore(workdir: str | Path, step: int | None = None, sharding=None):
  """(config, data, task, graphdef, params, step) of a run's checkpoint at `step` (default:
  the latest), for a run trained alone or as one of vmapped seeds; `sharding` places the
  parameters (default: the host's first device)."""
  workdir = Path(workdir)
  config = run_config(workdir)
  home, stacked = checkpoint_home(workdir)
  data, task, graphdef, params = build(config)
  ckpt = Checkpointer(home, config.train.keep_checkpoints)
  try:
    steps = sorted(ckpt.manager.all_steps())
    if not steps:
      raise UserError(f"{ckpt.directory} holds no checkpoint")
    step = steps[-1] if step is None else step
    if step not in steps:
      raise UserError(f"no checkpoint at step {step} in {ckpt.directory}; kept: {steps}")
    if stacked:
      seeds = vmapped_seeds(home)
      params = jax.tree.map(lambda x: np.broadcast_to(x, (len(seeds), *x.shape)).copy(),
                            params)
    if sharding is not None:
      params = jax.device_put(params, sharding)
    params = ckpt.restore_params(step, params, make_optimizer(config), stacked=stacked)
  finally:
    ckpt.close()
  if stacked:
    i = seeds.index(int(config.seed))
    params = jax.tree.map(lambda x: x[i], params)
  return config, data, task, graphdef, params, step


def checkpoint_steps(workdir: str | Path) -> list[int]:
  """The kept checkpoint steps of a run (vmapped or not)."""
  home, _ = checkpoint_home(workdir)
  ckpt = Checkpointer(home, None)  # keeps all: reading must never delete
  try:
    return sorted(ckpt.manager.all_steps())
  finally:
    ckpt.close()
