"""Orbax checkpoints of the training state, with clear errors and nothing ever deleted on failure.

A checkpoint holds `state` (params and optimizer state, a pytree) and `meta` (JSON: step,
timing accumulators, the partial logging window), so a resumed run continues exactly.
With several processes every process saves and restores its own parts through orbax (which
writes the shared files from process 0); unreadable checkpoints are moved aside by process 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from metricattn import multihost
from metricattn.errors import UserError
from metricattn.fileio import NoSpace, full_disk_path

# Orbax logs every save at INFO; keep the console for the run's own progress.
logging.getLogger("absl").setLevel(logging.WARNING)
# An unreadable checkpoint leaves orbax's read tasks failed; when Python collects them (often
# at exit) asyncio logs each as "Task exception was never retrieved" with a traceback. The
# failure is reported in one line by restore(); the project runs no asyncio code of its own.
logging.getLogger("asyncio").setLevel(logging.CRITICAL)


class CorruptCheckpoint(UserError):
  """A checkpoint's files cannot be read."""


class DiskFull(NoSpace):
  """No space left on the device while a run wrote PATH: one line, and which checkpoints are
  intact."""

  def __init__(self, path, steps: list[int]):
    super().__init__(path, f"checkpoints up to step {max(steps)} are intact" if steps
                     else "no checkpoint was written yet")


class Checkpointer:
  """Keeps the last `keep` checkpoints in `workdir/checkpoints`. `owner`: the run that holds
  the workdir's lock, which removes the half-written checkpoints (orbax's
  `*.orbax-checkpoint-tmp*`) that a kill mid-save left; readers never do (a live run may be
  writing one)."""

  def __init__(self, workdir: str | Path, keep: int | None, owner: bool = False):
    self.directory = Path(workdir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False,
                                           cleanup_tmp_directories=owner)
    with quiet_orbax_log():
      self.manager = ocp.CheckpointManager(
          self.directory, options=options,
          item_handlers={"state": ocp.StandardCheckpointHandler(),
                         "meta": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    with quiet_orbax_log():
      return self.manager.latest_step()

  def save(self, step: int, state, meta: dict) -> None:
    """Saves a checkpoint. A full disk is one UserError (orbax's threads' tracebacks held
    back) naming the newest checkpoint that is intact; orbax never renames a half-written
    checkpoint into place."""
    try:
      with quiet_tracebacks():
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    except Exception as e:
      if full_disk_path(e) is None:
        raise
      raise DiskFull(self.directory / str(step), saved_steps(self.directory.parent)) from None

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
    with quiet_orbax_log():
      steps = sorted(self.manager.all_steps(), reverse=True)
    unreadable, found = [], None
    with quiet_tracebacks() as quiet:
      for step in steps:
        try:
          with quiet_orbax_log():
            found = (step, *self.restore(step, target))
          break
        except CorruptCheckpoint as e:
          unreadable.append((step, e))
      quiet.failed = bool(unreadable)
    if found:
      step, state, meta = found
      # Only now that a readable one is found; by process 0 for all processes.
      for bad, e in unreadable if multihost.primary() else []:
        aside = self.directory.parent / "corrupt_checkpoints" / str(bad)
        while aside.exists():
          aside = aside.with_name(aside.name + "+")
        aside.parent.mkdir(exist_ok=True)
        shutil.move(self.directory / str(bad), aside)
        say(f"warning: {e.args[0].split(';')[0]}; moved it to {aside} and resuming from "
            f"step {step}, the newest readable checkpoint")
      if unreadable:
        multihost.barrier("corrupt checkpoints moved")
        self.manager.reload()
      return found
    if unreadable:
      raise unreadable[0][1]
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


def saved_steps(workdir: str | Path) -> list[int]:
  """The steps of the finished checkpoints in WORKDIR/checkpoints, read from the directory
  names alone (no orbax call, so also right after a failed save)."""
  try:
    return sorted(int(p.name) for p in (Path(workdir) / "checkpoints").iterdir()
                  if p.name.isdigit())
  except OSError:
    return []


@contextlib.contextmanager
def quiet_orbax_log():
  """Orbax logs an unreadable checkpoint's metadata at ERROR; the caller says it in one line."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    logger.setLevel(level)


class quiet_tracebacks:
  """Holds back what is printed straight to file descriptor 2 inside the block: orbax's
  reader threads print about 300 interleaved 'Event loop is closed' tracebacks when a
  checkpoint is unreadable, some after the read has failed. When the block fails (an
  exception, or `failed` set), the held-back output is dropped after a short grace period for
  those threads, and the caller reports the failure in one line; otherwise it is passed on."""

  def __enter__(self):
    sys.stderr.flush()
    self.failed, self.saved = False, os.dup(2)
    self.tmp = tempfile.TemporaryFile(mode="w+")
    os.dup2(self.tmp.fileno(), 2)
    return self

  def __exit__(self, kind, *rest):
    self.failed = self.failed or kind is not None
    if self.failed:
      time.sleep(0.5)
    sys.stderr.flush()
    os.dup2(self.saved, 2)
    os.close(self.saved)
    self.tmp.seek(0)
    text = self.tmp.read()
    self.tmp.close()
    if text and not self.failed:
      sys.stderr.write(text)


def _shapes_by_path(tree) -> dict[str, tuple]:
  """'params/blocks/0/attn/k_proj/kernel/value' -> shape; attribute, key and index alike."""
  name = lambda k: str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
  return {"/".join(map(name, path)): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
