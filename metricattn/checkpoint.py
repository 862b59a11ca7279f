"""Orbax checkpoints of the training state, with clear errors and nothing ever deleted on failure.

A checkpoint holds `state` (params and optimizer state, a pytree) and `meta` (JSON: step,
timing accumulators, the partial logging window), so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from metricattn.errors import UserError

# Orbax logs every save at INFO; keep the console for the run's own progress.
logging.getLogger("absl").setLevel(logging.WARNING)


class CorruptCheckpoint(UserError):
  """A checkpoint's files cannot be read."""


class Checkpointer:
  """Keeps the last `keep` checkpoints in `workdir/checkpoints`."""

  def __init__(self, workdir: str | Path, keep: int | None):
    self.directory = Path(workdir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, meta: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step: int, target):
    """Restores (state, meta) at `step` into the structure and shardings of `target`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    self._check_shapes(step, abstract)
    try:
      with quiet_tracebacks():
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types; all mean the files are unusable
      raise CorruptCheckpoint(
          f"checkpoint {self.directory / str(step)} could not be read ({type(e).__name__}: "
          f"{str(e).splitlines()[0][:200]}); nothing was deleted: move it away or use "
          "another --workdir") from None
    return out.state, out.meta

  def restore_latest(self, target, say=print):
    """(step, state, meta) of the newest readable checkpoint; (0, None, None) when there is
    none. An unreadable newer checkpoint is moved aside to ../corrupt_checkpoints/STEP (kept,
    never deleted) with one line saying so; when none is readable, CorruptCheckpoint."""
    import shutil
    steps = sorted(self.manager.all_steps(), reverse=True)
    for i, step in enumerate(steps):
      try:
        state, meta = self.restore(step, target)
        return step, state, meta
      except CorruptCheckpoint as e:
        if i + 1 == len(steps):
          raise
        aside = self.directory.parent / "corrupt_checkpoints" / str(step)
        aside.parent.mkdir(exist_ok=True)
        shutil.move(self.directory / str(step), aside)
        self.manager.reload()
        say(f"warning: {e.args[0].split(';')[0]}; moved it to {aside} and resuming from "
            f"step {steps[i + 1]}, the newest readable checkpoint")
    return 0, None, None

  def restore_params(self, step: int, params, tx, stacked: bool = False):
    """Only the parameters at `step`; `params` (stacked over seeds if `stacked`) and the
    optimizer `tx` give the structure of the saved state."""
    opt_state = (jax.vmap(tx.init) if stacked else tx.init)(params)
    state, _ = self.restore(step, {"params": params, "opt_state": opt_state})
    return state["params"]

  def _check_shapes(self, step: int, abstract) -> None:
    """A clear error when the checkpoint was written by a model of another shape."""
    try:
      meta = self.manager.item_metadata(step)["state"]
      saved = _shapes_by_path(meta)
    except Exception:  # unreadable metadata: let restore() report the corruption
      return
    wanted = _shapes_by_path(abstract)
    if saved == wanted:
      return
    diff = sorted(set(saved) ^ set(wanted)) or [k for k in wanted if saved[k] != wanted[k]]
    key = diff[0]
    raise UserError(
        f"checkpoint {self.directory / str(step)} was written by a model of another shape "
        f"(first difference at {key}: checkpoint {saved.get(key, 'absent')}, config "
        f"{wanted.get(key, 'absent')}); use a new --workdir or the config that wrote it")

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


@contextlib.contextmanager
def quiet_tracebacks():
  """When the block fails, drops what orbax's reader threads printed straight to file
  descriptor 2 meanwhile (for an unreadable checkpoint, about 300 interleaved lines of
  'Event loop is closed' tracebacks): the caller reports the failure in one line. When the
  block succeeds, its output is passed on."""
  sys.stderr.flush()
  saved = os.dup(2)
  failed = True
  with tempfile.TemporaryFile(mode="w+") as tmp:
    os.dup2(tmp.fileno(), 2)
    try:
      yield
      failed = False
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      text = tmp.read()
      if text and not failed:
        sys.stderr.write(text)


def _shapes_by_path(tree) -> dict[str, tuple]:
  """'params/blocks/0/attn/k_proj/kernel/value' -> shape; attribute, key and index alike."""
  name = lambda k: str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
  return {"/".join(map(name, path)): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
